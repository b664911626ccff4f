#!/usr/bin/env bash
# The `make bench` driver: codec micro-benchmarks, server scenarios driven by `loadgen`, and
# the real agent at its default interval. Writes a Markdown results table with the machine,
# the date and the exact commands (bins/bench/RESULTS.md, or BENCH_OUT) and prints it.
#
# Network rule: every scenario runs inside a private network namespace (`unshare -n`) that
# has nothing but loopback; the server always runs with --no-beacon, and loadgen refuses any
# non-loopback target. This needs root (or unprivileged user namespaces); there is no
# fallback that runs outside the namespace.
#
# Settings (environment; defaults in brackets, the quick mode's after the slash):
#   BENCH_QUICK=1              tiny version of everything (CI smoke test, ~90 s after build)
#   BENCH_PARTS                which parts to run ["codec server agent collectd alerts"]
#   BENCH_AGENTS               rate scenarios, agents each ["100 1000 10000" / "20"]
#   BENCH_QUIET_AGENTS         the same with the server's report off (isolates the ingest
#                              path from the snapshot/report cost) ["10000" / ""]
#   BENCH_RATE                 samples/s per agent [1]
#   BENCH_SECS                 steady seconds per rate scenario (after the ramp) [20 / 3]
#   BENCH_SETTLE               seconds after the ramp left out of a rate scenario's steady
#                              figures (loadgen --settle; in its whole-run p99) [5 / 0]
#   BENCH_REPEAT               runs of each scenario up to 1000 agents and of flood [3 / 1]
#   BENCH_REPEAT_BIG           runs of each scenario above 1000 agents [1]
#   BENCH_FLOOD_AGENTS         agents in each flood scenario ["200 20" / "10"]
#   BENCH_FLOOD_SECS           steady seconds of the flood [10 / 2]
#   BENCH_FLOOD_WINDOW         unacknowledged samples per flooding agent [64]
#   BENCH_CORES                per-core array length of simulated agents [8]
#   BENCH_REPORT_INTERVAL      server --report-interval [1s]
#   BENCH_SERVER_ARGS          extra server flags, e.g. "--no-store" [none]. Every server gets
#                              a fresh --data-dir per run under target/bench (its identity,
#                              and the durable store unless --no-store)
#   BENCH_AUTH                 trust modes every server scenario and the agent run in, one
#                              after the other, to compare them in one run: `required`
#                              (protocol 2: loadgen and the agent join with the server's token,
#                              scenario names end in -auth) and `off` (plaintext, -plain)
#                              ["required off"]
#   BENCH_STORM_AGENTS         reconnect storm: N agents (loadgen --reconnect) connected, the
#                              server killed (SIGKILL) and started again on the same port and
#                              data directory; time until all are live again ["10000" / "20"]
#   BENCH_AGENT_SECS           real agent run time [120 / 12]; the issue asks >= 600 for growth
#   BENCH_AGENT_WARMUP         seconds before the agent's RSS/CPU baseline [20 / 6]
#   BENCH_AGENT_ARGS           extra agent flags, e.g. "--collect cpu,memory" (the groups
#                              before the whole-machine ones) or "--processes 5" [none]
#   BENCH_AGENT_BASELINE       flags of a second agent measured alongside the first, in the
#                              same time window (issue 13: every group against the groups it
#                              had before); empty: none ["--collect cpu,memory"]
#   BENCH_COLLECTD             part `collectd`: collectd measured alongside the agent, with
#                              the same plugins (Debian's collectd-core; skipped when missing)
#                              [/usr/sbin/collectd]
#   BENCH_COLLECTD_INTERVAL    collectd's interval in seconds (the agent's default) [5]
#   BENCH_ALERT_AGENTS         part `alerts` (issue 14): rate scenario agents ["1000" / "20"]
#   BENCH_ALERT_FLOOD_AGENTS   the flood scenario's agents ["200" / "10"]
#   BENCH_ALERT_WEBHOOKS       variants: none (no --alerts), ok, blackhole (accepts, never
#                              answers), slow (answers after BENCH_SLOW_WEBHOOK_S)
#                              ["none blackhole slow" / "none blackhole"]
#   BENCH_ALERT_REPEAT         runs of each (variants interleaved) [3 / 1]
#   BENCH_SLOW_WEBHOOK_S       the slow webhook's delay [5]
#   BENCH_OUT                  results file [bins/bench/RESULTS.md / target/bench/RESULTS-quick.md]
#   BENCH_NOFILE               file-descriptor limit set in the namespace [65536]
#   BENCH_BIN                  directory of prebuilt server/loadgen/agent; skips the build
#                              [target/release]
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SELF="$ROOT/bins/bench/run.sh"

QUICK="${BENCH_QUICK:-0}"
if [[ "$QUICK" == 1 ]]; then
    def_agents="20" def_quiet_agents="" def_secs=3 def_settle=0 def_repeat=1 def_flood_agents=10 def_flood_secs=2
    def_agent_secs=12 def_agent_warmup=6 def_storm_agents=20
    def_alert_agents=20 def_alert_flood_agents=10 def_alert_webhooks="none blackhole" def_alert_repeat=1
else
    def_agents="100 1000 10000" def_quiet_agents="10000" def_secs=20 def_settle=5 def_repeat=3 def_flood_agents="200 20"
    def_flood_secs=10 def_agent_secs=120 def_agent_warmup=20 def_storm_agents=10000
    def_alert_agents=1000 def_alert_flood_agents=200 def_alert_webhooks="none blackhole slow"
    def_alert_repeat=3
fi
export BENCH_QUICK="$QUICK"
export BENCH_PARTS="${BENCH_PARTS:-codec server agent collectd alerts}"
export BENCH_AGENTS="${BENCH_AGENTS:-$def_agents}"
export BENCH_QUIET_AGENTS="${BENCH_QUIET_AGENTS-$def_quiet_agents}"
export BENCH_RATE="${BENCH_RATE:-1}"
export BENCH_SETTLE="${BENCH_SETTLE:-$def_settle}"
export BENCH_SECS="${BENCH_SECS:-$def_secs}"
export BENCH_REPEAT="${BENCH_REPEAT:-$def_repeat}"
export BENCH_REPEAT_BIG="${BENCH_REPEAT_BIG:-1}"
export BENCH_FLOOD_AGENTS="${BENCH_FLOOD_AGENTS:-$def_flood_agents}"
export BENCH_FLOOD_SECS="${BENCH_FLOOD_SECS:-$def_flood_secs}"
export BENCH_FLOOD_WINDOW="${BENCH_FLOOD_WINDOW:-64}"
export BENCH_CORES="${BENCH_CORES:-8}"
export BENCH_REPORT_INTERVAL="${BENCH_REPORT_INTERVAL:-1s}"
export BENCH_AGENT_SECS="${BENCH_AGENT_SECS:-$def_agent_secs}"
export BENCH_AGENT_WARMUP="${BENCH_AGENT_WARMUP:-$def_agent_warmup}"
export BENCH_NOFILE="${BENCH_NOFILE:-65536}"
export BENCH_SERVER_ARGS="${BENCH_SERVER_ARGS:-}"
export BENCH_AUTH="${BENCH_AUTH:-required off}"
export BENCH_STORM_AGENTS="${BENCH_STORM_AGENTS-$def_storm_agents}"
export BENCH_AGENT_ARGS="${BENCH_AGENT_ARGS:-}"
export BENCH_AGENT_BASELINE="${BENCH_AGENT_BASELINE---collect cpu,memory}"
export BENCH_COLLECTD="${BENCH_COLLECTD:-/usr/sbin/collectd}"
export BENCH_COLLECTD_INTERVAL="${BENCH_COLLECTD_INTERVAL:-5}"
export BENCH_ALERT_AGENTS="${BENCH_ALERT_AGENTS:-$def_alert_agents}"
export BENCH_ALERT_FLOOD_AGENTS="${BENCH_ALERT_FLOOD_AGENTS:-$def_alert_flood_agents}"
export BENCH_ALERT_WEBHOOKS="${BENCH_ALERT_WEBHOOKS:-$def_alert_webhooks}"
export BENCH_ALERT_REPEAT="${BENCH_ALERT_REPEAT:-$def_alert_repeat}"
export BENCH_SLOW_WEBHOOK_S="${BENCH_SLOW_WEBHOOK_S:-5}"

TARGET_DIR="${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
    | jq -r .target_directory)}"
[[ -n "$TARGET_DIR" && "$TARGET_DIR" != null ]] || TARGET_DIR="$ROOT/target"
# BENCH_BIN: run already-built binaries from this directory (e.g. an older build, to compare
# before/after in one time window); the build step is skipped.
export BIN="${BENCH_BIN:-$TARGET_DIR/release}"
export WORK="$TARGET_DIR/bench"
if [[ "$QUICK" == 1 ]]; then
    export BENCH_OUT="${BENCH_OUT:-$WORK/RESULTS-quick.md}"
else
    export BENCH_OUT="${BENCH_OUT:-$ROOT/bins/bench/RESULTS.md}"
fi

log() { printf 'bench: %s\n' "$*" >&2; }
# A failing command ends the run (set -e); say which one, with its line.
trap 'log "failed (exit $?) at run.sh line $LINENO: $BASH_COMMAND"' ERR
die() { log "error: $*"; exit 1; }
has_part() { [[ " $BENCH_PARTS " == *" $1 "* ]]; }
# Appends a command line to the list of exact commands shown in the results.
record_cmd() { local c="$*"; printf '%s\n' "${c//$ROOT\//}" >>"$WORK/commands.txt"; }

# ---------------------------------------------------------------------------------------
# Inside the private network namespace: the server and agent scenarios.
# ---------------------------------------------------------------------------------------

CLK_TCK="$(getconf CLK_TCK)"

# CPU seconds (user + system, all threads, exited ones included) of a process.
proc_cpu_s() {
    awk -v t="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.3f\n", ($12 + $13) / t }' "/proc/$1/stat"
}
# CPU nanoseconds of a process's live threads (precise, from schedstat).
proc_cpu_ns() {
    cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%d\n", s }'
}
# A field of /proc/PID/status in kB (VmRSS, VmHWM, Threads…).
proc_status() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
# TCP payload bytes sent and received by the client socket connected to port $1 (tcp_info).
tcp_bytes() {
    ss -tinH state established "( dport = :$1 )" | grep -o 'bytes_\(sent\|received\):[0-9]*' \
        | awk -F: '{ v[$1] += $2 } END { printf "%d\t%d\n", v["bytes_sent"], v["bytes_received"] }'
}
lo_tx_bytes() { awk -F'[: ]+' '$2 == "lo" { print $11 }' /proc/net/dev; }

# Stops a process we started: SIGTERM, then SIGKILL after 10 s. Only ever by its PID.
stop_pid() {
    local pid="$1" i
    # Never 0, 1 or a negative number: kill would reach a process group or every process.
    [[ "$pid" =~ ^[0-9]+$ && "$pid" -gt 1 ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM for 10 s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

STARTED_PIDS=()
# Set by a part for the server runs it starts: extra server flags, the results' file prefix,
# and fields added to each result (a JSON object).
SCENARIO_SERVER_ARGS=()
RESULT_PREFIX=server
SCENARIO_META='{}'
cleanup_pids() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
}

# Starts the server on an ephemeral loopback port; sets SERVER_PID and SERVER_ADDR. The
# address comes from the first JSON report (`.server.listen`), or, with the report off, from
# the startup banner on stderr ("listening on ADDR (TCP)").
start_server() {
    local dir="$1" report="${2:-json}" auth="${3:-required}" bind="${4:-127.0.0.1:0}" i
    local cmd=("$BIN/server" --bind "$bind" --no-beacon)
    local help
    help="$("$BIN/server" --help 2>/dev/null || true)"
    # Servers with an HTTP API get an ephemeral loopback port rather than their fixed default.
    if grep -q -- '--http <' <<<"$help"; then
        cmd+=(--http 127.0.0.1:0)
    fi
    # A fresh data directory of its own (never the user's): the identity, and the durable
    # store unless --no-store.
    if grep -q -- '--data-dir <' <<<"$help"; then
        cmd+=(--data-dir "$dir/data")
    fi
    # Protocol 2 (the default) or plaintext; loadgen and the agent join with the token.
    SERVER_TOKEN=""
    if grep -q -- '--auth <' <<<"$help"; then
        [[ "$auth" == off ]] && cmd+=(--auth off)
    fi
    # Flood scenarios (flood-N, alerts-VARIANT-flood-N) send far above their announced
    # interval on purpose: no rate limit.
    if [[ "${dir##*/}" == *flood-* ]] && grep -q -- '--max-samples-per-interval <' <<<"$help"; then
        cmd+=(--max-samples-per-interval 0)
    fi
    local extra=()
    read -r -a extra <<<"$BENCH_SERVER_ARGS"
    cmd+=("${extra[@]}" "${SCENARIO_SERVER_ARGS[@]}")
    if [[ "$report" == json ]]; then
        cmd+=(--report-format json --report-interval "$BENCH_REPORT_INTERVAL")
    else
        cmd+=(--report-format off)
    fi
    record_cmd "${cmd[*]} >server.jsonl 2>server.log &"
    # Created before the server starts: the loop below may read them before the child has.
    : >"$dir/server.jsonl"
    : >"$dir/server.log"
    "${cmd[@]}" >"$dir/server.jsonl" 2>"$dir/server.log" &
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
    SERVER_ADDR=""
    for i in $(seq 100); do
        if [[ "$report" == json && -s "$dir/server.jsonl" ]]; then
            SERVER_ADDR="$(head -n1 "$dir/server.jsonl" | jq -r '.server.listen' 2>/dev/null || true)"
        elif [[ "$report" != json ]]; then
            # The banner names the agents' TCP port (the HTTP API listens on another one).
            SERVER_ADDR="$(sed -n 's/.*listening on \([0-9.:]*\) (TCP).*/\1/p' "$dir/server.log" \
                | head -n1)"
        fi
        [[ -n "$SERVER_ADDR" && "$SERVER_ADDR" != null ]] && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z "$SERVER_ADDR" || "$SERVER_ADDR" == null ]]; then
        cat "$dir/server.log" >&2 || true
        die "the server did not report its address within 10 s"
    fi
    if [[ "$auth" != off ]] && grep -q -- '--auth <' <<<"$help"; then
        SERVER_TOKEN="$("$BIN/server" token --data-dir "$dir/data")"
        record_cmd "$BIN/server token --data-dir data   # the join token loadgen and the agent use"
    fi
}

# `--join TOKEN` for loadgen when the server has a token.
join_args() {
    JOIN=()
    [[ -n "$SERVER_TOKEN" ]] && JOIN=(--join "$SERVER_TOKEN")
    return 0
}

# loadgen's --settle for rate scenarios (absent from loadgen builds before it: none).
settle_args() {
    SETTLE=()
    if [[ "$BENCH_SETTLE" != 0 ]] && "$BIN/loadgen" --help 2>/dev/null | grep -q -- '--settle <'; then
        SETTLE=(--settle "${BENCH_SETTLE}s")
    fi
    return 0
}

# Samples a process's RSS and open descriptors every second until it exits or $2 exists.
sample_proc() {
    local pid="$1" stop="$2" out="$3" start
    start="$(date +%s.%N)"
    while kill -0 "$pid" 2>/dev/null && [[ ! -e "$stop" ]]; do
        printf '%s\t%s\t%s\n' "$(echo "$(date +%s.%N) - $start" | bc)" \
            "$(proc_status "$pid" VmRSS 2>/dev/null || echo 0)" \
            "$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)" >>"$out"
        sleep 1
    done
}

# Busy CPU seconds of the whole machine so far (every process, all cores).
machine_busy_s() {
    awk -v t="$CLK_TCK" '$1 == "cpu" { printf "%.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / t }' /proc/stat
}

# One server scenario run: server + loadgen; writes $WORK/results/server-NAME-K.json.
# REPORT is `json` (the server reports every BENCH_REPORT_INTERVAL) or `off`.
server_run() {
    local name="$1" run="$2" report="$3" auth="$4"
    shift 4
    local dir="$WORK/runs/$name-$run"
    rm -rf "$dir"
    mkdir -p "$dir"
    log "server scenario $name, run $run (--auth $auth): loadgen $*"
    start_server "$dir" "$report" "$auth"
    join_args
    local loadavg wall0 wall1 busy0 busy1 rc=0
    loadavg="$(cut -d' ' -f1-3 /proc/loadavg)"
    wall0="$(date +%s.%N)"
    busy0="$(machine_busy_s)"
    sample_proc "$SERVER_PID" "$dir/stop-sampling" "$dir/server-samples.tsv" &
    local sampler=$!
    local cmd=("$BIN/loadgen" --server "$SERVER_ADDR" --json --progress 0 "${JOIN[@]}" "$@")
    record_cmd "${cmd[*]//$SERVER_TOKEN/TOKEN}"
    # loadgen bounds itself (ramp + duration + 5 s drain); timeout is a second guard.
    timeout 900 "${cmd[@]}" >"$dir/loadgen.json" 2>"$dir/loadgen.err" || rc=$?
    wall1="$(date +%s.%N)"
    busy1="$(machine_busy_s)"
    touch "$dir/stop-sampling"
    wait "$sampler" 2>/dev/null || true
    local cpu hwm rss threads
    cpu="$(proc_cpu_s "$SERVER_PID")"
    hwm="$(proc_status "$SERVER_PID" VmHWM)"
    rss="$(proc_status "$SERVER_PID" VmRSS)"
    threads="$(proc_status "$SERVER_PID" Threads)"
    # With alerts: what the engine and the notifier did (GET /api/alerts, before the stop).
    local alerts=null http
    if [[ " ${SCENARIO_SERVER_ARGS[*]} " == *" --alerts "* ]] && command -v curl >/dev/null; then
        http="$(tail -n2 "$dir/server.jsonl" | jq -rR 'fromjson? | .server.http // empty' | tail -n1)"
        local login=()
        [[ -s "$dir/data/http.token" ]] && login=(-H "Authorization: Bearer $(cat "$dir/data/http.token")")
        [[ -n "$http" ]] && alerts="$(curl -s --max-time 5 "${login[@]}" "http://$http/api/alerts" \
            | jq -c '{firing, pending, notifications}' 2>/dev/null || echo null)"
        [[ -n "$alerts" ]] || alerts=null
    fi
    stop_pid "$SERVER_PID"
    if [[ ! -s "$dir/loadgen.json" ]]; then
        log "loadgen produced no report (exit $rc):"
        cat "$dir/loadgen.err" >&2 || true
        echo '{}' >"$dir/loadgen.json"
    fi
    # Server-side view: most agents live at once, samples received in total (last report).
    # Reports are read leniently: the last line can be cut short when the server exits.
    local live received warnings max_fds
    live="$(jq -cR 'fromjson? | .summary.live' "$dir/server.jsonl" 2>/dev/null | sort -n | tail -n1 || true)"
    received="$(tail -n2 "$dir/server.jsonl" | jq -R 'fromjson? | [.agents[].received] | add // 0' \
        2>/dev/null | tail -n1 || true)"
    warnings="$(grep -c ' WARN ' "$dir/server.log" || true)"
    max_fds="$(awk 'BEGIN { m = 0 } $3 > m { m = $3 } END { print m }' "$dir/server-samples.tsv" 2>/dev/null || true)"
    jq -n --arg name "$name" --argjson run "$run" --argjson rc "$rc" \
        --slurpfile lg "$dir/loadgen.json" \
        --argjson cpu "$cpu" --argjson hwm "${hwm:-0}" --argjson rss "${rss:-0}" \
        --argjson threads "${threads:-0}" --argjson live "${live:-null}" \
        --argjson received "${received:-null}" --argjson warnings "${warnings:-0}" \
        --argjson fds "${max_fds:-0}" --arg loadavg "$loadavg" \
        --argjson wall "$(echo "$wall1 - $wall0" | bc)" --arg report "$report" \
        --argjson busy "$(echo "$busy1 - $busy0" | bc)" \
        --arg warn_sample "$(grep ' WARN ' "$dir/server.log" | head -n3 | cut -c1-300 || true)" \
        --arg auth "$auth" --argjson alerts "$alerts" --argjson meta "$SCENARIO_META" \
        '$meta + {name: $name, run: $run, report: $report, auth: $auth, loadgen_exit: $rc, loadgen: $lg[0],
          alerts: $alerts,
          machine_busy_s: $busy,
          server: {cpu_s: $cpu, wall_s: $wall, peak_rss_kb: $hwm, end_rss_kb: $rss,
                   threads: $threads, max_live: $live, received: $received,
                   warnings: $warnings, warning_sample: $warn_sample, max_fds: $fds},
          loadavg_before: $loadavg}' >"$WORK/results/$RESULT_PREFIX-$name-$run.json"
    jq -c '{name, run, ok: .loadgen.ok, connected: .loadgen.connected,
            samples_per_s: .loadgen.samples_per_s, p99_ms: .loadgen.latency.p99_ms,
            cpu_s: .server.cpu_s, peak_rss_kb: .server.peak_rss_kb, alerts}' \
        "$WORK/results/$RESULT_PREFIX-$name-$run.json" >&2
}

# The scenario-name suffix of a trust mode.
suffix() { if [[ "$1" == off ]]; then echo plain; else echo auth; fi; }

# Each scenario in every BENCH_AUTH mode, the modes alternating run by run (the machine is
# shared: alternating keeps a noisy minute from landing on one mode only).
server_scenarios() {
    local n ramp runs k a
    settle_args
    for n in $BENCH_AGENTS; do
        ramp=$(((n + 999) / 1000))
        runs="$BENCH_REPEAT"
        ((n > 1000)) && runs="$BENCH_REPEAT_BIG"
        for k in $(seq "$runs"); do
            for a in $BENCH_AUTH; do
                server_run "rate-$n-$(suffix "$a")" "$k" json "$a" --agents "$n" \
                    --rate "$BENCH_RATE" --ramp "${ramp}s" "${SETTLE[@]}" --duration "${BENCH_SECS}s" \
                    --cores "$BENCH_CORES"
            done
        done
    done
    for n in $BENCH_QUIET_AGENTS; do
        ramp=$(((n + 999) / 1000))
        runs="$BENCH_REPEAT"
        ((n > 1000)) && runs="$BENCH_REPEAT_BIG"
        for k in $(seq "$runs"); do
            for a in $BENCH_AUTH; do
                server_run "rate-$n-report-off-$(suffix "$a")" "$k" off "$a" --agents "$n" \
                    --rate "$BENCH_RATE" --ramp "${ramp}s" "${SETTLE[@]}" --duration "${BENCH_SECS}s" \
                    --cores "$BENCH_CORES"
            done
        done
    done
    for n in $BENCH_FLOOD_AGENTS; do
        for k in $(seq "$BENCH_REPEAT"); do
            for a in $BENCH_AUTH; do
                server_run "flood-$n-$(suffix "$a")" "$k" json "$a" --agents "$n" --flood \
                    --window "$BENCH_FLOOD_WINDOW" --ramp 1s --duration "${BENCH_FLOOD_SECS}s" \
                    --cores "$BENCH_CORES"
            done
        done
    done
    for n in $BENCH_STORM_AGENTS; do
        for a in $BENCH_AUTH; do
            storm_run "storm-$n-$(suffix "$a")" "$n" "$a"
        done
    done
}

# Polls the server's JSON reports until one shows N live agents; prints the seconds waited
# (or nothing after LIMIT s). Reads only the start of the last line, where `summary` is: a
# 10,000-agent report is megabytes, and parsing it a few times a second would load the very
# machine being measured.
wait_all_live() {
    local file="$1" n="$2" limit="$3" t0 live
    t0="$(date +%s.%N)"
    while (($(echo "$(date +%s.%N) - $t0 < $limit" | bc))); do
        live="$(tail -n1 "$file" 2>/dev/null | head -c 2000 | grep -o '"summary":{[^}]*}' \
            | grep -o '"live":[0-9]*' | cut -d: -f2 || true)"
        if [[ -n "$live" && "$live" -ge "$n" ]]; then
            echo "$(date +%s.%N) - $t0" | bc
            return 0
        fi
        sleep 0.5
    done
}

# Reconnect storm: N agents connected (loadgen --reconnect), the server killed (SIGKILL) and
# started again at once on the same port and data directory (its identity and enrollment);
# the time until every agent is live again on the new server, and the new server's CPU.
storm_run() {
    local name="$1" n="$2" auth="$3"
    local dir="$WORK/runs/$name"
    rm -rf "$dir"
    mkdir -p "$dir"
    log "reconnect storm $name (--auth $auth): $n agents, server killed and restarted"
    start_server "$dir" json "$auth"
    join_args
    local ramp=$(((n + 999) / 1000)) first_live="" again="" cpu="" hwm=""
    local cmd=("$BIN/loadgen" --server "$SERVER_ADDR" --json --progress 0 "${JOIN[@]}" --reconnect
        --agents "$n" --rate 1 --ramp "${ramp}s" --duration 90s --cores "$BENCH_CORES")
    record_cmd "${cmd[*]//$SERVER_TOKEN/TOKEN} &   # then: kill -9 the server, start it again"
    timeout 300 "${cmd[@]}" >"$dir/loadgen.json" 2>"$dir/loadgen.err" &
    local lg=$!
    STARTED_PIDS+=("$lg")
    first_live="$(wait_all_live "$dir/server.jsonl" "$n" $((ramp + 60)))"
    if [[ -n "$first_live" ]]; then
        local addr="$SERVER_ADDR"
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        mv "$dir/server.jsonl" "$dir/server-before.jsonl"
        mv "$dir/server.log" "$dir/server-before.log"
        start_server "$dir" json "$auth" "$addr"
        again="$(wait_all_live "$dir/server.jsonl" "$n" 60)"
        cpu="$(proc_cpu_s "$SERVER_PID")"
        hwm="$(proc_status "$SERVER_PID" VmHWM)"
    fi
    stop_pid "$lg"
    stop_pid "$SERVER_PID"
    jq -n --arg name "$name" --arg auth "$auth" --argjson agents "$n" \
        --argjson first "${first_live:-null}" --argjson again "${again:-null}" \
        --argjson cpu "${cpu:-null}" --argjson hwm "${hwm:-null}" \
        '{name: $name, auth: $auth, agents: $agents, first_all_live_s: $first,
          all_live_again_s: $again, server_cpu_s_until_then: $cpu, server_peak_rss_kb: $hwm}' \
        >"$WORK/results/storm-$name.json"
    jq -c . "$WORK/results/storm-$name.json" >&2
}

# Samples of one measured process per second: `t_s cpu_ns rss_kb tcp_sent tcp_received lo_tx
# samples`. TCP bytes are the process's connection to port $3 (0: none), read in the process's
# own network namespace; lo_tx is that namespace's loopback (each subject has a namespace of
# its own, so nothing else's traffic is counted). $4 is the count of samples so far.
subject_row() {
    local pid="$1" t="$2" port="$3" samples="$4" tcp="0	0"
    [[ "$port" != 0 ]] && tcp="$(nsenter -t "$pid" -n bash -c "$(declare -f tcp_bytes); tcp_bytes $port")"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$(proc_cpu_ns "$pid")" "$(proc_status "$pid" VmRSS)" \
        "$tcp" "$(awk -F'[: ]+' '$2 == "lo" { print $11 }' "/proc/$pid/net/dev")" "$samples"
}

# Samples an agent has had received: the latest report in $1 (a server's JSON lines), agent $2.
received_by() {
    local n
    n="$(tail -n1 "$1" | jq -R --arg n "$2" \
        'fromjson? | [.agents[] | select(.name == $n) | .received] | add // 0' 2>/dev/null || true)"
    echo "${n:--1}"
}

# Writes $WORK/results/$2.json from subject $1's TSV (rows after the warm-up). CPU per
# sample: over all of them, and the median over the windows between rows where the count of
# samples went up (one sample each, normally). $3: the pid (still running), $4: interval_ms,
# $5: what it is, for the results table.
summarise_subject() {
    local tsv="$1" label="$2" pid="$3" interval_ms="$4" what="$5" hwm cpu_total anon file pss
    hwm="$(proc_status "$pid" VmHWM)"
    anon="$(proc_status "$pid" RssAnon)"
    file="$(proc_status "$pid" RssFile)"
    pss="$(awk '$1 == "Pss:" { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || echo null)"
    cpu_total="$(proc_cpu_ns "$pid" | awk '{ printf "%.4f", $1 / 1e9 }')"
    awk -F'\t' -v warm="$BENCH_AGENT_WARMUP" -v hwm="$hwm" -v cpu_total="$cpu_total" \
        -v secs="$BENCH_AGENT_SECS" -v interval_ms="$interval_ms" '
        function median(a, n,   i, j, t) {
            if (n == 0) return "null"
            for (i = 2; i <= n; i++) {
                t = a[i]
                for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]
                a[j + 1] = t
            }
            return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        NR == 1 || $7 < 0 || $1 < warm { next }
        {
            rows++
            rss[rows] = $3
            if (rows == 1) { c0 = $2; w0 = $4; r0 = $5; l0 = $6; s0 = $7; rss0 = $3; pc = $2; ps = $7 }
            else if ($7 > ps) { k++; per[k] = ($2 - pc) / ($7 - ps); pc = $2; ps = $7 }
            c1 = $2; w1 = $4; r1 = $5; l1 = $6; s1 = $7; rss1 = $3
        }
        END {
            ds = s1 - s0
            printf "{\"secs\": %s, \"warmup_s\": %s, \"interval_ms\": %s, \"rows\": %d,", secs, warm, interval_ms, rows
            printf " \"rss_after_warmup_kb\": %d, \"rss_end_kb\": %d, \"rss_median_kb\": %s,", rss0, rss1, median(rss, rows)
            printf " \"peak_rss_kb\": %d, \"samples_measured\": %d, \"cpu_total_s\": %s,", hwm, ds, cpu_total
            if (ds > 0) {
                printf " \"cpu_ms_per_sample\": %.4f,", (c1 - c0) / ds / 1e6
                printf " \"cpu_ms_per_sample_median\": %s,", (k ? sprintf("%.4f", median(per, k) / 1e6) : "null")
                printf " \"payload_bytes_per_sample\": %.1f,", (w1 - w0) / ds
                printf " \"ack_bytes_per_sample\": %.1f,", (r1 - r0) / ds
                printf " \"wire_bytes_per_sample\": %.1f,", (l1 - l0) / ds
            } else {
                printf " \"cpu_ms_per_sample\": null, \"cpu_ms_per_sample_median\": null,"
                printf " \"payload_bytes_per_sample\": null, \"ack_bytes_per_sample\": null,"
                printf " \"wire_bytes_per_sample\": null,"
            }
            printf " \"samples_total\": %d}\n", s1
        }' "$tsv" \
    | jq --argjson anon "${anon:-null}" --argjson file "${file:-null}" --argjson pss "${pss:-null}" \
        --arg lbl "$label" --arg what "$what" \
        '. + {"label": $lbl, what: $what, rss_anon_kb: $anon, rss_file_kb: $file, pss_kb: $pss}' \
        >"$WORK/results/$label.json"
    jq -c . "$WORK/results/$label.json" >&2
}

# collectd's configuration for the comparison: the plugins of issue 13 (cpu, memory, load,
# swap, df, disk, interface) at BENCH_COLLECTD_INTERVAL, chosen like the agent's defaults
# (real filesystems, whole disks, no loopback interface), values sent with the network plugin
# to 127.0.0.1 of collectd's own network namespace (nothing listens; the packets end there).
collectd_conf() {
    local dir="$1" t
    cat <<CONF
Hostname "bench-collectd"
FQDNLookup false
BaseDir "$dir"
PIDFile "$dir/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
Interval $BENCH_COLLECTD_INTERVAL
LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File "$dir/collectd.log"
</Plugin>
LoadPlugin cpu
LoadPlugin memory
LoadPlugin load
LoadPlugin swap
LoadPlugin df
LoadPlugin disk
LoadPlugin interface
LoadPlugin network
<Plugin df>
CONF
    # The agent's default: no pseudo, container or network filesystems (metrics/fs.rs).
    for t in autofs aufs binfmt_misc bpf cgroup cgroup2 configfs debugfs devpts devtmpfs \
        efivarfs fusectl hugetlbfs mqueue nsfs overlay proc pstore ramfs rpc_pipefs securityfs \
        selinuxfs squashfs sysfs tmpfs tracefs 9p afs ceph cifs glusterfs nfs nfs4 smb3 smbfs; do
        printf '  FSType "%s"\n' "$t"
    done
    cat <<CONF
  IgnoreSelected true
  ReportInodes true
</Plugin>
<Plugin disk>
  Disk "/^([hsv]d[a-z]+|xvd[a-z]+|nvme[0-9]+n[0-9]+|mmcblk[0-9]+)\$/"
  IgnoreSelected false
</Plugin>
<Plugin interface>
  Interface "lo"
  IgnoreSelected true
</Plugin>
<Plugin network>
  Server "127.0.0.1" "25826"
</Plugin>
CONF
}

# The real agent at its default interval against a server in trust mode $1 (default
# required); writes $WORK/results/agent-auth-MODE.json (and, for the first mode of
# BENCH_AUTH, agent.json). With the issue-13 comparison (BENCH_AGENT_BASELINE, part
# `collectd`), in the same time window and for the first mode only: the agent with only the
# groups it had before (agent-baseline.json, against a server of its own in a nested network
# namespace, in the same trust mode: --auto-approve there) and collectd with the same plugins
# (collectd.json, in a nested namespace too), each measured exactly like the agent.
agent_scenario() {
    local auth="${1:-required}" first=""
    [[ "$auth" == "${BENCH_AUTH%% *}" ]] && first=1
    local dir="$WORK/runs/agent-$auth"
    rm -rf "$dir"
    mkdir -p "$dir"
    log "agent scenario (--auth $auth): real agent at its default interval for ${BENCH_AGENT_SECS}s"
    start_server "$dir" json "$auth"
    local port="${SERVER_ADDR##*:}"
    local cmd=("$BIN/agent" --host 127.0.0.1 --port "$port" --quiet --name bench-agent
        --state-dir "$dir/agent-state")
    local trust_args=()
    if [[ "$auth" == off ]] && "$BIN/agent" --help 2>/dev/null | grep -q -- '--auth <'; then
        trust_args=(--auth off)
    fi
    if [[ -n "$SERVER_TOKEN" ]]; then
        cmd+=(--join "$SERVER_TOKEN")
    else
        cmd+=("${trust_args[@]}")
    fi
    # shellcheck disable=SC2206 # extra flags, split on spaces on purpose
    [[ -n "$BENCH_AGENT_ARGS" ]] && cmd+=($BENCH_AGENT_ARGS)
    record_cmd "${cmd[*]//$SERVER_TOKEN/TOKEN} &"
    "${cmd[@]}" >"$dir/agent.log" 2>&1 &
    local apid=$!
    STARTED_PIDS+=("$apid")

    # The same agent with today's groups only, in a namespace of its own with its own server
    # (a fixed port: nothing else lives in there), so that its traffic is counted apart.
    local bpid="" bserver=""
    if [[ -n "$BENCH_AGENT_BASELINE" && -n "$first" ]]; then
        local bcmd=("$BIN/agent" --host 127.0.0.1 --port 18080 --quiet --name bench-agent-baseline
            --state-dir "$dir/baseline-agent-state" "${trust_args[@]}")
        # shellcheck disable=SC2206
        bcmd+=($BENCH_AGENT_BASELINE)
        # Its server: the same trust mode, approving the agent's key by itself (no token to
        # pass into the namespace), with its identity in a directory of its own.
        local btrust="--auto-approve"
        [[ "$auth" == off ]] && btrust="--auth off"
        record_cmd "unshare -n sh -c 'ip link set lo up; server --bind 127.0.0.1:18080 --no-beacon --no-store --no-http --data-dir baseline-data $btrust --report-format json --report-interval 1s >baseline-server.jsonl & exec ${bcmd[*]}' &"
        # shellcheck disable=SC2016,SC2086 # expanded by the inner shell; $3 split on purpose
        unshare -n bash -c 'ip link set lo up
            "$1" --bind 127.0.0.1:18080 --no-beacon --no-store --no-http --data-dir "$2/baseline-data" \
                $3 --report-format json \
                --report-interval 1s >"$2/baseline-server.jsonl" 2>"$2/baseline-server.log" &
            echo $! >"$2/baseline-server.pid"
            shift 3
            exec "$@"' bash "$BIN/server" "$dir" "$btrust" "${bcmd[@]}" >"$dir/agent-baseline.log" 2>&1 &
        bpid=$!
        STARTED_PIDS+=("$bpid")
    fi

    # collectd, when the part is on and it is installed (make bench installs collectd-core).
    local cpid=""
    if has_part collectd && [[ -n "$first" ]]; then
        if [[ -x "$BENCH_COLLECTD" ]]; then
            mkdir -p "$dir/collectd"
            collectd_conf "$dir/collectd" >"$dir/collectd/collectd.conf"
            record_cmd "unshare -n sh -c 'ip link set lo up; exec $BENCH_COLLECTD -f -C collectd.conf' &   # config: collectd_conf in run.sh"
            # shellcheck disable=SC2016
            unshare -n sh -c 'ip link set lo up && exec "$1" -f -C "$2"' sh "$BENCH_COLLECTD" \
                "$dir/collectd/collectd.conf" >"$dir/collectd/stdout.log" 2>&1 &
            cpid=$!
            STARTED_PIDS+=("$cpid")
        else
            log "collectd part: $BENCH_COLLECTD not found (Debian's collectd-core; \`make bench\` installs it): not run"
        fi
    fi

    local t0 now elapsed header
    t0="$(date +%s.%N)"
    header='t_s\tcpu_ns\trss_kb\ttcp_sent\ttcp_received\tlo_tx\tsamples\n'
    # shellcheck disable=SC2059
    printf "$header" >"$dir/agent-samples.tsv"
    # shellcheck disable=SC2059
    [[ -n "$bpid" ]] && printf "$header" >"$dir/agent-baseline-samples.tsv"
    # shellcheck disable=SC2059
    [[ -n "$cpid" ]] && printf "$header" >"$dir/collectd-samples.tsv"
    # One row per second, for BENCH_AGENT_SECS seconds (bounded: the loop counts seconds).
    for _ in $(seq "$BENCH_AGENT_SECS"); do
        sleep 1
        kill -0 "$apid" 2>/dev/null || die "the agent exited early: $(tail -n5 "$dir/agent.log")"
        now="$(date +%s.%N)"
        elapsed="$(echo "$now - $t0" | bc)"
        subject_row "$apid" "$elapsed" "$port" "$(received_by "$dir/server.jsonl" bench-agent)" \
            >>"$dir/agent-samples.tsv"
        if [[ -n "$bpid" ]]; then
            # Its server is the nested shell's child: known once that shell wrote its pid.
            if [[ -z "$bserver" && -s "$dir/baseline-server.pid" ]]; then
                bserver="$(cat "$dir/baseline-server.pid")"
                STARTED_PIDS+=("$bserver")
            fi
            kill -0 "$bpid" 2>/dev/null || die "the baseline agent exited early: $(tail -n5 "$dir/agent-baseline.log")"
            subject_row "$bpid" "$elapsed" 18080 \
                "$(received_by "$dir/baseline-server.jsonl" bench-agent-baseline)" \
                >>"$dir/agent-baseline-samples.tsv"
        fi
        if [[ -n "$cpid" ]]; then
            kill -0 "$cpid" 2>/dev/null || die "collectd exited early: $(tail -n5 "$dir/collectd/collectd.log")"
            # collectd reads at its start and then every interval: the reads so far.
            subject_row "$cpid" "$elapsed" 0 \
                "$(echo "$elapsed * 1000 / ($BENCH_COLLECTD_INTERVAL * 1000) + 1" | bc)" \
                >>"$dir/collectd-samples.tsv"
        fi
    done
    local interval_ms
    interval_ms="$(tail -n2 "$dir/server.jsonl" | jq -R 'fromjson? | [.agents[] | select(.name == "bench-agent") | .interval_ms][0] // null' 2>/dev/null | tail -n1 || true)"
    summarise_subject "$dir/agent-samples.tsv" "agent-auth-$auth" "$apid" "${interval_ms:-null}" \
        "agent ${BENCH_AGENT_ARGS:-(default groups: all but processes)}"
    jq --arg auth "$auth" '. + {auth: $auth}' "$WORK/results/agent-auth-$auth.json" \
        >"$dir/agent-result.json"
    cp "$dir/agent-result.json" "$WORK/results/agent-auth-$auth.json"
    [[ -n "$first" ]] && cp "$dir/agent-result.json" "$WORK/results/agent.json"
    if [[ -n "$bpid" ]]; then
        summarise_subject "$dir/agent-baseline-samples.tsv" agent-baseline "$bpid" \
            "${interval_ms:-null}" "agent $BENCH_AGENT_BASELINE"
    fi
    if [[ -n "$cpid" ]]; then
        local version
        version="$("$BENCH_COLLECTD" -h 2>&1 | sed -n 's/^collectd \([0-9.]*[0-9]\).*/\1/p' | head -n1)"
        summarise_subject "$dir/collectd-samples.tsv" collectd "$cpid" \
            "$((BENCH_COLLECTD_INTERVAL * 1000))" \
            "collectd $version: cpu, memory, load, swap, df, disk, interface; network output"
    fi
    stop_pid "$apid"
    if [[ -n "$bpid" ]]; then
        stop_pid "$bpid"
        stop_pid "$bserver"
    fi
    [[ -n "$cpid" ]] && stop_pid "$cpid"
    stop_pid "$SERVER_PID"
    return 0
}

# Issue 14: alerts firing at volume at a webhook that is dead or slow must not slow ingest.
# The rules make loadgen's agents flap (memory used is 20–80 %, a new value each sample,
# against one threshold of 50 % with no band and no waits): about one transition per agent
# every two samples, each a notification, into the webhook's bounded queue.
alerts_rules() {
    cat <<RULES
[settings]
evaluate_every = "1s"

[rules.memory]
threshold = 50
resolve = 50
for = "0s"
resolve_for = "0s"

[[notify.webhook]]
url = "$1"
RULES
}

# Each variant in turn (interleaved, BENCH_ALERT_REPEAT times): a rate scenario (p99) and a
# flood (peak ingest) against a server without alerts (`none`) or with the flapping rules
# notifying a webhook sink that answers at once (`ok`), never (`blackhole`) or late (`slow`).
alerts_scenarios() {
    local k variant n sink_pid port ramp dir="$WORK/runs/alerts"
    mkdir -p "$dir"
    for k in $(seq "$BENCH_ALERT_REPEAT"); do
        for variant in $BENCH_ALERT_WEBHOOKS; do
            SCENARIO_SERVER_ARGS=()
            sink_pid=""
            if [[ "$variant" != none ]]; then
                local mode=("$variant")
                [[ "$variant" == slow ]] && mode+=("$BENCH_SLOW_WEBHOOK_S")
                : >"$dir/sink-$variant.port"
                record_cmd "python3 bins/bench/webhook-sink.py ${mode[*]} >port &"
                python3 "$ROOT/bins/bench/webhook-sink.py" "${mode[@]}" >"$dir/sink-$variant.port" &
                sink_pid=$!
                STARTED_PIDS+=("$sink_pid")
                for _ in $(seq 100); do
                    [[ -s "$dir/sink-$variant.port" ]] && break
                    sleep 0.1
                done
                port="$(head -n1 "$dir/sink-$variant.port")"
                [[ -n "$port" ]] || die "the $variant webhook sink did not start"
                alerts_rules "http://127.0.0.1:$port/hook" >"$dir/alerts-$variant.toml"
                SCENARIO_SERVER_ARGS=(--alerts "$dir/alerts-$variant.toml")
            fi
            RESULT_PREFIX=alerts
            for n in $BENCH_ALERT_AGENTS; do
                ramp=$(((n + 999) / 1000))
                SCENARIO_META="$(jq -nc --arg v "$variant" --argjson n "$n" \
                    '{variant: $v, kind: "rate", agents: $n}')"
                server_run "alerts-$variant-rate-$n" "$k" json "${BENCH_AUTH%% *}" --agents "$n" --rate "$BENCH_RATE" \
                    --ramp "${ramp}s" --duration "${BENCH_SECS}s" --cores "$BENCH_CORES"
            done
            for n in $BENCH_ALERT_FLOOD_AGENTS; do
                SCENARIO_META="$(jq -nc --arg v "$variant" --argjson n "$n" \
                    '{variant: $v, kind: "flood", agents: $n}')"
                server_run "alerts-$variant-flood-$n" "$k" json "${BENCH_AUTH%% *}" --agents "$n" --flood \
                    --window "$BENCH_FLOOD_WINDOW" --ramp 1s --duration "${BENCH_FLOOD_SECS}s" \
                    --cores "$BENCH_CORES"
            done
            [[ -n "$sink_pid" ]] && stop_pid "$sink_pid"
            SCENARIO_SERVER_ARGS=()
            RESULT_PREFIX=server
            SCENARIO_META='{}'
        done
    done
}

inside_netns() {
    trap cleanup_pids EXIT
    ip link set lo up
    # Safety net check: nothing but loopback may exist in here.
    if ip -o link show | grep -qv ': lo:'; then
        die "the private namespace has interfaces other than lo; refusing to run"
    fi
    # One descriptor per connection on each side: 10,000 agents need > 10,000 in the server
    # and in loadgen. Root may raise the hard limit (up to fs.nr_open); else use the hard one.
    ulimit -Hn "$BENCH_NOFILE" 2>/dev/null || true
    ulimit -n "$(ulimit -Hn)"
    log "inside a private network namespace (lo only); nofile limit $(ulimit -n)"
    echo "$(ulimit -n)" >"$WORK/nofile.txt"
    has_part server && server_scenarios
    if has_part agent; then
        local a
        for a in $BENCH_AUTH; do agent_scenario "$a"; done
    elif has_part collectd; then
        agent_scenario "${BENCH_AUTH%% *}"
    fi
    has_part alerts && alerts_scenarios
    return 0
}

if [[ "${1:-}" == "--in-netns" ]]; then
    inside_netns
    exit 0
fi

# ---------------------------------------------------------------------------------------
# Outside: build, codec benchmarks, then the scenarios in a private namespace, then render.
# ---------------------------------------------------------------------------------------

for tool in cargo jq bc awk unshare ip timeout nsenter; do
    command -v "$tool" >/dev/null || die "needs \`$tool\`"
done
if has_part alerts && [[ " $BENCH_ALERT_WEBHOOKS " != " none " ]]; then
    for tool in python3 curl; do
        command -v "$tool" >/dev/null || die "the alerts part needs \`$tool\` (make setup installs it)"
    done
fi
rm -rf "$WORK/results" "$WORK/runs" "$WORK/commands.txt"
mkdir -p "$WORK/results" "$WORK/runs"
T_START="$(date +%s)"

build=(cargo build --release -p lanmon-bins --bins)
if [[ -z "${BENCH_BIN:-}" ]]; then
    record_cmd "${build[*]}"
    log "${build[*]}"
    "${build[@]}"
fi

if has_part codec; then
    crit_args=()
    [[ "$QUICK" == 1 ]] && crit_args=(--warm-up-time 0.2 --measurement-time 0.5 --sample-size 10)
    bench=(cargo bench -p lanmon-bins --bench codec -- "${crit_args[@]}")
    record_cmd "${bench[*]}"
    log "${bench[*]}"
    rm -rf "$TARGET_DIR/criterion"
    "${bench[@]}" | tee "$WORK/criterion.txt" >&2
    for dir in "$TARGET_DIR"/criterion/{encode,decode}/metrics/*/new; do
        [[ -f "$dir/estimates.json" ]] || continue
        jq -n --slurpfile b "$dir/benchmark.json" --slurpfile e "$dir/estimates.json" \
            '{group: $b[0].group_id, cores: ($b[0].value_str | tonumber),
              bytes: $b[0].throughput.ElementsAndBytes.bytes,
              median_ns: $e[0].median.point_estimate,
              low_ns: $e[0].median.confidence_interval.lower_bound,
              high_ns: $e[0].median.confidence_interval.upper_bound}'
    done | jq -s . >"$WORK/results/codec.json"
fi

if has_part server || has_part agent || has_part collectd || has_part alerts; then
    if ! unshare -n true 2>/dev/null; then
        die "cannot create a private network namespace (unshare -n): run as root. The \
scenarios never run outside one (network rule)."
    fi
    record_cmd "unshare -n bash bins/bench/run.sh --in-netns   # runs the scenarios below"
    unshare -n bash "$SELF" --in-netns
fi

T_END="$(date +%s)"
mem_total="$(awk '$1 == "MemTotal:" { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
jq -n \
    --arg date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
    --arg nproc "$(nproc)" \
    --arg cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" \
    --arg kernel "$(uname -sr)" \
    --arg mem "$mem_total" \
    --arg rustc "$(rustc --version)" \
    --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')" \
    --arg quick "$QUICK" \
    --arg nofile "$(cat "$WORK/nofile.txt" 2>/dev/null || echo '?')" \
    --arg total_s "$((T_END - T_START))" \
    --rawfile commands "$WORK/commands.txt" \
    --arg settings "$(env | grep '^BENCH_' | sort | tr '\n' ' ' | sed "s|$ROOT/||g")" \
    '{date: $date, nproc: $nproc, cpu: $cpu, kernel: $kernel, mem: $mem, rustc: $rustc,
      commit: $commit, quick: ($quick == "1"), nofile: $nofile, total_s: $total_s,
      commands: $commands, settings: $settings}' >"$WORK/results/machine.json"

shopt -s nullglob
server_files=("$WORK"/results/server-*.json)
servers='[]'
((${#server_files[@]} > 0)) && servers="$(jq -s . "${server_files[@]}")"
codec='[]'
[[ -s "$WORK/results/codec.json" ]] && codec="$(cat "$WORK/results/codec.json")"
agent_files=("$WORK"/results/agent-auth-*.json)
agents='[]'
((${#agent_files[@]} > 0)) && agents="$(jq -s . "${agent_files[@]}")"
agent=null
[[ -s "$WORK/results/agent.json" ]] && agent="$(cat "$WORK/results/agent.json")"
agent_base=null
[[ -s "$WORK/results/agent-baseline.json" ]] && agent_base="$(cat "$WORK/results/agent-baseline.json")"
collectd=null
[[ -s "$WORK/results/collectd.json" ]] && collectd="$(cat "$WORK/results/collectd.json")"
alert_files=("$WORK"/results/alerts-*.json)
alerts='[]'
((${#alert_files[@]} > 0)) && alerts="$(jq -s . "${alert_files[@]}")"
storm_files=("$WORK"/results/storm-*.json)
storms='[]'
((${#storm_files[@]} > 0)) && storms="$(jq -s . "${storm_files[@]}")"
jq -n -r \
    --slurpfile machine "$WORK/results/machine.json" \
    --argjson codec "$codec" --argjson server "$servers" --argjson agent "$agent" \
    --argjson agents "$agents" --argjson storms "$storms" \
    --argjson agent_base "$agent_base" --argjson collectd "$collectd" --argjson alerts "$alerts" \
    -f "$ROOT/bins/bench/render.jq" >"$BENCH_OUT"
cat "$BENCH_OUT"
log "results written to $BENCH_OUT (raw data in $WORK)"
