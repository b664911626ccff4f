# lanmon — every target a newcomer or CI needs. `make help` lists them.
#
#   make demo    a server and two agents on this machine (loopback only); Ctrl+C stops all
#   make test    everything CI runs: setup, fmt check, clippy -D warnings, unit tests, itest

SHELL        := /bin/bash
CARGO        ?= cargo
ARGS         ?=
DEMO_PORT    ?= 8080
TARGET_DIR   := $(or $(CARGO_TARGET_DIR),target)
RELEASE_BIN  := $(TARGET_DIR)/release
DEBUG_BIN    := $(TARGET_DIR)/debug

.PHONY: help setup build run-server run-agent demo test lint fmt-check clippy unit itest itest-loopback itest-lan itest-browser bench bench-deps bench-smoke fuzz deb itest-deb clean

help:
	@echo "make demo        server + 2 agents on this machine (loopback only), Ctrl+C stops all"
	@echo "make test        everything CI runs (setup, fmt, clippy, unit tests, bench-smoke, itest)"
	@echo "make build       release binaries in $(RELEASE_BIN)/ (server, agent)"
	@echo "make run-server  ARGS='--beacon-to 127.255.255.255'   run the server (ARGS passed through)"
	@echo "make run-agent   ARGS='--host 192.168.1.10'           run an agent (or ARGS=--discover)"
	@echo "make itest       integration tests only (real binaries, real sockets)"
	@echo "make bench       benchmarks (codec, server at 100/1,000/10,000 agents, flood, agent, discovery): bins/bench/RESULTS.md"
	@echo "make fuzz        coverage-guided fuzzing (cargo fuzz, nightly), FUZZ_SECS=60 per target"
	@echo "make deb         lanmon-server and lanmon-agent .debs in $(TARGET_DIR)/debian/ (cargo-deb)"
	@echo "make itest-deb   build the .debs, dpkg -i / -r / --purge them, lintian (root)"
	@echo "make clean       remove build output"

# Installs what the tests need on a bare Debian machine (as root), and checks the toolchain.
# `prometheus` (Debian's package: `prometheus` and `promtool`) is for the /metrics and rules
# tests, `prometheus-alertmanager` for the Alertmanager test; their services must not start
# (they would bind 0.0.0.0:9090 / 9093 / 9094): a policy-rc.d that denies every start
# is put in place for the install when the machine has none, and the service is disabled.
# `systemd` (for `systemd-analyze verify` of the units; it need not run), `lintian`, `busybox`,
# `curl` and `wget` are for the install tests (units, install.sh with each tool, the .debs).
setup:
	@command -v $(CARGO) >/dev/null || { [ -f "$$HOME/.cargo/env" ] && . "$$HOME/.cargo/env"; command -v $(CARGO) >/dev/null; } \
	  || { echo "cargo not found: install Rust first (https://rustup.rs), then re-run make"; exit 1; }
	@if command -v rustup >/dev/null; then \
	   for c in rustfmt clippy; do rustup component list --installed 2>/dev/null | grep -q "^$$c" || rustup component add $$c; done; \
	 fi
	@missing=""; \
	 command -v jq      >/dev/null || missing="$$missing jq"; \
	 command -v bc      >/dev/null || missing="$$missing bc"; \
	 command -v ip      >/dev/null || missing="$$missing iproute2"; \
	 command -v unshare >/dev/null || missing="$$missing util-linux"; \
	 command -v python3 >/dev/null || missing="$$missing python3"; \
	 [ "$$LANMON_SKIP_PROMETHEUS" = 1 ] || { command -v prometheus >/dev/null && command -v promtool >/dev/null; } \
	   || missing="$$missing prometheus"; \
	 [ "$$LANMON_SKIP_PROMETHEUS" = 1 ] || command -v prometheus-alertmanager >/dev/null \
	   || missing="$$missing prometheus-alertmanager"; \
	 command -v chromium >/dev/null || missing="$$missing chromium"; \
	 command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	 command -v lintian  >/dev/null || missing="$$missing lintian"; \
	 command -v busybox  >/dev/null || missing="$$missing busybox"; \
	 command -v curl     >/dev/null || missing="$$missing curl"; \
	 command -v wget     >/dev/null || missing="$$missing wget"; \
	 command -v node     >/dev/null || missing="$$missing nodejs"; \
	 command -v npm      >/dev/null || missing="$$missing npm"; \
	 if [ -n "$$missing" ]; then \
	   if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	     echo "installing:$$missing"; \
	     policy=/usr/sbin/policy-rc.d; ours=; \
	     if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' >$$policy && chmod 755 $$policy && ours=1; fi; \
	     apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	       apt-get install -y -qq --no-install-recommends $$missing >/dev/null; rc=$$?; \
	     [ -z "$$ours" ] || rm -f $$policy; \
	     [ $$rc = 0 ] || exit $$rc; \
	     for svc in prometheus prometheus-alertmanager; do \
	       if [ -x /etc/init.d/$$svc ]; then \
	         /etc/init.d/$$svc status >/dev/null 2>&1 && /etc/init.d/$$svc stop; \
	         update-rc.d $$svc disable >/dev/null 2>&1; \
	         [ ! -d /run/systemd/system ] || systemctl disable --now $$svc >/dev/null 2>&1; \
	       fi; \
	     done; true; \
	   else echo "please install:$$missing (or LANMON_SKIP_PROMETHEUS=1 to leave out the Prometheus tests)"; exit 1; fi; \
	 fi

build:
	$(CARGO) build --release --workspace --bins

# The server's default beacon goes to every LAN this machine is on; on a shared or watched
# network pass ARGS='--beacon-to 127.255.255.255' (this machine only) or ARGS=--no-beacon.
run-server: build
	$(RELEASE_BIN)/server $(ARGS)

run-agent: build
	$(RELEASE_BIN)/agent $(ARGS)

demo: build
	@bins/scripts/demo.sh $(RELEASE_BIN) $(DEMO_PORT)

test: setup lint unit bench-smoke itest

lint: fmt-check clippy

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	$(CARGO) test --workspace --exclude integration-tests --locked

itest: itest-loopback itest-lan itest-browser itest-deb

# Real server and agents on 127.0.0.1. As root, inside a private network namespace
# (unshare -n) as a safety net: nothing in it can reach the shared network.
itest-loopback:
	$(CARGO) build --workspace --bins --locked
	$(CARGO) test -p integration-tests --locked --no-run
	@if [ "$$(id -u)" = 0 ] && command -v unshare >/dev/null; then \
	  unshare -n sh -c 'ip link set lo up && exec $(CARGO) test -p integration-tests --locked --offline'; \
	else \
	  $(CARGO) test -p integration-tests --locked --offline; \
	fi

# Discovery across a real multi-host LAN built from network namespaces (needs root).
itest-lan:
	$(CARGO) build --workspace --bins --locked
	@if [ "$$(id -u)" = 0 ]; then \
	  integration-tests/netns/lan-discovery.sh $(DEBUG_BIN); \
	else \
	  echo "itest-lan: SKIPPED (needs root to create network namespaces; CI runs it as root)"; \
	fi

# The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core
# (integration-tests/browser, pinned by its package-lock.json) against a real server and three
# agents on 127.0.0.1. As root, inside a private network namespace like itest-loopback.
itest-browser:
	$(CARGO) build --workspace --bins --locked
	cd integration-tests/browser && npm ci --no-audit --no-fund --loglevel=error
	@if [ "$$(id -u)" = 0 ] && command -v unshare >/dev/null; then \
	  unshare -n sh -c 'ip link set lo up; exec node integration-tests/browser/dashboard.test.mjs $(DEBUG_BIN)'; \
	else \
	  node integration-tests/browser/dashboard.test.mjs $(DEBUG_BIN); \
	fi

# The benchmarks (root: the scenarios run inside a private network namespace).
bench: bench-deps
	bins/bench/run.sh
	$(CARGO) build --release --workspace --bins --locked
	bins/bench/discovery-latency.sh $(RELEASE_BIN) 10

# What only the full benchmark needs: Debian's collectd-core, to compare the agent's cost with
# collectd's (run.sh's `collectd` part; the smoke test skips it when it is missing, so CI and
# `make setup` stay without it). Its service must never start: the same policy-rc.d as setup,
# and the service is disabled; run.sh starts collectd itself, in a private namespace.
bench-deps:
	@if [ -x /usr/sbin/collectd ]; then :; \
	 elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	   echo "installing: collectd-core (for the benchmark's collectd comparison)"; \
	   policy=/usr/sbin/policy-rc.d; ours=; \
	   if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' >$$policy && chmod 755 $$policy && ours=1; fi; \
	   apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	     apt-get install -y -qq --no-install-recommends collectd-core >/dev/null; rc=$$?; \
	   [ -z "$$ours" ] || rm -f $$policy; \
	   [ $$rc = 0 ] || exit $$rc; \
	   if [ -x /etc/init.d/collectd ]; then \
	     /etc/init.d/collectd status >/dev/null 2>&1 && /etc/init.d/collectd stop; \
	     update-rc.d collectd disable >/dev/null 2>&1; \
	     [ ! -d /run/systemd/system ] || systemctl disable --now collectd >/dev/null 2>&1; \
	   fi; true; \
	 else echo "bench: collectd-core not installed (not root): the collectd comparison is skipped"; fi

# CI's check that loadgen and the bench harness still build and run: a tiny scenario of
# everything, and a few rounds of the discovery timing. Results go to target/bench/.
bench-smoke:
	@if [ "$$(id -u)" = 0 ]; then \
	  BENCH_QUICK=1 bins/bench/run.sh && \
	  $(CARGO) build --release --workspace --bins --locked && \
	  bins/bench/discovery-latency.sh $(RELEASE_BIN) 3; \
	else \
	  echo "bench-smoke: SKIPPED (needs root for its private network namespace; CI runs it as root)"; \
	fi

# Coverage-guided fuzzing with cargo fuzz (libFuzzer) on the nightly toolchain: the frame
# decoder + validator, the beacon parsers (v1, and v2 with the agent's acceptance rule), the
# server's Noise handshake and the join token decoder, FUZZ_SECS seconds each (installs cargo-fuzz from
# crates.io when missing). The corpus grows in actors/fuzz/corpus/ (not committed), seeded from
# actors/fuzz/seeds/; a crash is saved in actors/fuzz/artifacts/ and fails the target.
FUZZ_SECS    ?= 60
FUZZ_TARGETS ?= frames beacon handshake signed_beacon token
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cargo +nightly fuzz build --fuzz-dir actors/fuzz -O
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p actors/fuzz/corpus/$$t; \
	  echo "fuzz $$t for $(FUZZ_SECS) s"; \
	  cargo +nightly fuzz run --fuzz-dir actors/fuzz -O $$t actors/fuzz/corpus/$$t actors/fuzz/seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECS) -max_len=4096 -rss_limit_mb=1024 -print_final_stats=1 2>&1 \
	    | grep -v '# Uses:' | tail -n 12; \
	  [ $${PIPESTATUS[0]} = 0 ] || exit 1; \
	done
# Debian packages with cargo-deb (installed from crates.io when missing). The units, sysusers
# entries and default env files are written by the release binaries themselves (`install
# --root` into a staging directory), so the packages carry what `install` writes.
DEB_STAGE := $(RELEASE_BIN)/lanmon-deb
deb:
	@$(CARGO) deb --version >/dev/null 2>&1 || $(CARGO) install cargo-deb --locked
	$(CARGO) build --release --locked -p lanmon-bins --bin server --bin agent
	rm -rf $(DEB_STAGE)
	$(RELEASE_BIN)/server install --root $(DEB_STAGE)/server --bin-dir /usr/bin >/dev/null
	$(RELEASE_BIN)/agent install --root $(DEB_STAGE)/agent --bin-dir /usr/bin >/dev/null
	$(CARGO) deb -p lanmon-bins --variant server --no-build --locked
	$(CARGO) deb -p lanmon-bins --variant agent --no-build --locked

# Installs, removes and purges the .debs on this machine (root; services are not started
# without systemd, and a policy-rc.d forbids it meanwhile), checks what each step leaves and
# runs lintian. Leaves the machine as it found it.
itest-deb: deb
	@if [ "$$(id -u)" = 0 ] && command -v dpkg >/dev/null; then \
	  bins/packaging/deb-test.sh $(TARGET_DIR)/debian; \
	else \
	  echo "itest-deb: SKIPPED (needs root and dpkg; CI runs it as root)"; \
	fi

clean:
	$(CARGO) clean
