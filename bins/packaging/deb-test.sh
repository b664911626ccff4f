#!/bin/sh
# The .debs on a real dpkg (root; `make itest-deb`): contents, units identical to what
# `install` writes, dpkg -i (twice: an upgrade in place), dpkg -r, dpkg --purge, and what each
# step leaves behind, as the README's "Install on your machines" says; then lintian.
#
# This machine may be shared: services are never started (no systemd here, and a policy-rc.d
# that forbids starting is in place meanwhile); nothing installed by the test stays (the
# packages are purged, also when a check fails, and the system users the packages created are
# deleted at the end); it refuses to run if lanmon is installed or /var/lib/lanmon* exists.
#
# usage: bins/packaging/deb-test.sh DEB_DIR   (DEB_DIR holds lanmon-server_*.deb, lanmon-agent_*.deb)
set -eu

dir=${1:?usage: deb-test.sh DEB_DIR}
here=$(cd "$(dirname "$0")" && pwd)
release=$(cd "$dir/../release" 2>/dev/null && pwd || true)
server_deb=$(ls -t "$dir"/lanmon-server_*.deb | head -n 1)
agent_deb=$(ls -t "$dir"/lanmon-agent_*.deb | head -n 1)
step() { printf '\n== %s\n' "$*"; }
fail() { printf 'deb-test: FAILED: %s\n' "$*" >&2; exit 1; }
check() { # DESCRIPTION COMMAND...
    what=$1
    shift
    if "$@"; then printf '  ok: %s\n' "$what"; else fail "$what"; fi
}
absent() { [ ! -e "$1" ] && [ ! -L "$1" ]; }
user_exists() { getent passwd "$1" >/dev/null; }
mode_of() { stat -c %a "$1"; }

[ "$(id -u)" = 0 ] || { echo "deb-test: SKIPPED (needs root)"; exit 0; }
for p in lanmon-server lanmon-agent; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "installed\|config-files"; then
        fail "$p is already installed here: not touching it"
    fi
done
for d in /var/lib/lanmon /var/lib/lanmon-agent /etc/lanmon; do
    [ ! -e "$d" ] || fail "$d exists: a real lanmon may be installed here; not touching it"
done

policy=/usr/sbin/policy-rc.d
own_policy=
had_server_user=
had_agent_user=
user_exists lanmon && had_server_user=1
user_exists lanmon-agent && had_agent_user=1
cleanup() {
    status=$?
    for p in lanmon-agent lanmon-server; do
        if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "installed\|config-files"; then
            echo "deb-test: cleaning up: purging $p"
            dpkg_retry --purge "$p" >/dev/null 2>&1 || true
        fi
    done
    # None of these existed before the test (checked above): whatever is left is ours.
    rm -rf /var/lib/lanmon /var/lib/lanmon-agent /etc/lanmon
    [ -n "$had_agent_user" ] || ! user_exists lanmon-agent || userdel lanmon-agent 2>/dev/null || true
    [ -n "$had_server_user" ] || ! user_exists lanmon || userdel lanmon 2>/dev/null || true
    [ -z "$own_policy" ] || rm -f "$policy"
    exit $status
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
fi

# dpkg with retries while another dpkg/apt holds the lock (the machine is shared).
dpkg_retry() {
    tries=0
    while :; do
        out=$(DEBIAN_FRONTEND=noninteractive dpkg --force-confdef --force-confold "$@" 2>&1) && { printf '%s\n' "$out"; return 0; }
        case $out in
        *"lock"*) ;;
        *) printf '%s\n' "$out" >&2; return 1 ;;
        esac
        tries=$((tries + 1))
        [ "$tries" -lt 60 ] || { printf '%s\n' "$out" >&2; return 1; }
        sleep 5
    done
}

# A process running the installed binary $1 (by /proc/PID/exe, not by name: other
# engineers run `server` and `agent` processes on this machine).
running() {
    for exe in /proc/[0-9]*/exe; do
        [ "$(readlink "$exe" 2>/dev/null)" = "$1" ] && return 0
    done
    return 1
}
not_running() { ! running "$1"; }

step "contents of $(basename "$server_deb") and $(basename "$agent_deb")"
listing=$(dpkg-deb -c "$server_deb")
for f in ./usr/bin/server ./usr/lib/lanmon/agent ./usr/lib/systemd/system/lanmon-server.service \
    ./usr/lib/sysusers.d/lanmon-server.conf ./etc/lanmon/server.env; do
    check "lanmon-server ships $f" sh -c 'printf "%s\n" "$1" | grep -q " $2\$"' sh "$listing" "$f"
done
listing=$(dpkg-deb -c "$agent_deb")
for f in ./usr/bin/agent ./usr/lib/systemd/system/lanmon-agent.service \
    ./usr/lib/sysusers.d/lanmon-agent.conf ./etc/lanmon/agent.env; do
    check "lanmon-agent ships $f" sh -c 'printf "%s\n" "$1" | grep -q " $2\$"' sh "$listing" "$f"
done
check "lanmon-server: /etc/lanmon/server.env is a conffile" sh -c 'dpkg-deb -I "$1" conffiles | grep -qx /etc/lanmon/server.env' sh "$server_deb"
check "lanmon-agent: /etc/lanmon/agent.env is a conffile" sh -c 'dpkg-deb -I "$1" conffiles | grep -qx /etc/lanmon/agent.env' sh "$agent_deb"
check "lanmon-server depends on libc6" sh -c 'dpkg-deb -f "$1" Depends | grep -q libc6' sh "$server_deb"
if [ -n "$release" ] && [ -x "$release/server" ]; then
    stage=$(mktemp -d)
    "$release/server" install --root "$stage/s" --bin-dir /usr/bin >/dev/null
    "$release/agent" install --root "$stage/a" --bin-dir /usr/bin >/dev/null
    dpkg-deb --fsys-tarfile "$server_deb" | tar -xO ./usr/lib/systemd/system/lanmon-server.service >"$stage/server.service"
    dpkg-deb --fsys-tarfile "$agent_deb" | tar -xO ./usr/lib/systemd/system/lanmon-agent.service >"$stage/agent.service"
    check "the packaged server unit is what \`server install --bin-dir /usr/bin\` writes" \
        cmp -s "$stage/server.service" "$stage/s/etc/systemd/system/lanmon-server.service"
    check "the packaged agent unit is what \`agent install --bin-dir /usr/bin\` writes" \
        cmp -s "$stage/agent.service" "$stage/a/etc/systemd/system/lanmon-agent.service"
    rm -rf "$stage"
fi

step "dpkg -i (systemd is $([ -d /run/systemd/system ] && echo running || echo 'not running'))"
dpkg_retry -i "$server_deb" "$agent_deb" | sed 's/^/  | /'
for f in /usr/bin/server /usr/bin/agent /usr/lib/lanmon/agent \
    /usr/lib/systemd/system/lanmon-server.service /usr/lib/systemd/system/lanmon-agent.service \
    /usr/lib/sysusers.d/lanmon-server.conf /usr/lib/sysusers.d/lanmon-agent.conf; do
    check "installed: $f" test -f "$f"
done
check "settings /etc/lanmon/server.env, mode 600" test "$(mode_of /etc/lanmon/server.env)" = 600
check "settings /etc/lanmon/agent.env, mode 600" test "$(mode_of /etc/lanmon/agent.env)" = 600
check "the agent's default settings find the server by discovery" grep -qx 'LANMON_DISCOVER="true"' /etc/lanmon/agent.env
check "system user lanmon created" user_exists lanmon
check "system user lanmon-agent created" user_exists lanmon-agent
check "lanmon-server.service enabled" test -L /etc/systemd/system/multi-user.target.wants/lanmon-server.service
check "lanmon-agent.service enabled" test -L /etc/systemd/system/multi-user.target.wants/lanmon-agent.service
if [ ! -d /run/systemd/system ]; then
    check "no /usr/bin/server process was started (no systemd)" not_running /usr/bin/server
    check "no /usr/bin/agent process was started (no systemd)" not_running /usr/bin/agent
fi
if command -v systemd-analyze >/dev/null; then
    check "systemd-analyze verify accepts the installed units" \
        systemd-analyze verify /usr/lib/systemd/system/lanmon-server.service /usr/lib/systemd/system/lanmon-agent.service
fi
check "\`agent install\` refuses to replace the packaged service" sh -c 'out=$(/usr/bin/agent install --dry-run --discover 2>&1) && exit 1; printf "%s" "$out" | grep -q "installed from its .deb"'
check "/usr/bin/server runs" /usr/bin/server --version
check "/usr/bin/agent runs" /usr/bin/agent --version
# The packaged server finds the packaged agent it offers (on loopback, in a private network).
log=$(mktemp)
unshare -n sh -c 'ip link set lo up; exec /usr/bin/server --bind 127.0.0.1:0 --http 127.0.0.1:0 --no-beacon --no-store --report-format off' 2>"$log" &
pid=$!
found=
i=0
while [ $i -lt 150 ]; do
    if grep -q "offering /usr/lib/lanmon/agent" "$log"; then found=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    i=$((i + 1))
    sleep 0.1
done
kill "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
[ -n "$found" ] || cat "$log" >&2
rm -f "$log"
check "the packaged server offers /usr/lib/lanmon/agent at GET /download/agent" test -n "$found"

step "state a running service would leave; an administrator's edit of the settings"
install -d -o lanmon -g lanmon -m 700 /var/lib/lanmon
echo data >/var/lib/lanmon/history.db
install -d -o lanmon-agent -g lanmon-agent -m 700 /var/lib/lanmon-agent
echo key >/var/lib/lanmon-agent/key
printf 'LANMON_HOST="10.9.9.9"\n' >>/etc/lanmon/agent.env

step "dpkg -i again (upgrade in place)"
dpkg_retry -i "$server_deb" "$agent_deb" | sed 's/^/  | /'
check "the edited settings survive the upgrade" grep -qx 'LANMON_HOST="10.9.9.9"' /etc/lanmon/agent.env
check "the data survives the upgrade" test -f /var/lib/lanmon/history.db

step "dpkg -r"
dpkg_retry -r lanmon-server lanmon-agent | sed 's/^/  | /'
for f in /usr/bin/server /usr/bin/agent /usr/lib/lanmon/agent \
    /usr/lib/systemd/system/lanmon-server.service /usr/lib/systemd/system/lanmon-agent.service \
    /usr/lib/sysusers.d/lanmon-server.conf /usr/lib/sysusers.d/lanmon-agent.conf; do
    check "removed: $f" absent "$f"
done
# As with every Debian service package (deb-systemd-helper): until purge, systemd keeps what
# it needs to remember that the service was enabled.
find /etc/systemd -name 'lanmon-*' -printf '  kept until purge: %p -> %l\n'
check "kept: /etc/lanmon/server.env" test -f /etc/lanmon/server.env
check "kept: /etc/lanmon/agent.env (with the edit)" grep -qx 'LANMON_HOST="10.9.9.9"' /etc/lanmon/agent.env
check "kept: /var/lib/lanmon (the history)" test -f /var/lib/lanmon/history.db
check "kept: /var/lib/lanmon-agent" test -f /var/lib/lanmon-agent/key
check "kept: users lanmon and lanmon-agent" sh -c 'getent passwd lanmon >/dev/null && getent passwd lanmon-agent >/dev/null'
check "dpkg: config-files only" sh -c 'dpkg-query -W -f="\${Status}" lanmon-server | grep -q config-files'

step "dpkg --purge"
dpkg_retry --purge lanmon-server lanmon-agent | sed 's/^/  | /'
for f in /etc/lanmon /var/lib/lanmon /var/lib/lanmon-agent \
    /etc/systemd/system/lanmon-server.service /etc/systemd/system/lanmon-agent.service; do
    check "gone: $f" absent "$f"
done
check "no lanmon symlink left under /etc/systemd" sh -c '! find /etc/systemd -name "lanmon-*" | grep -q .'
check "dpkg: not installed" sh -c '! dpkg-query -W -f="\${Status}" lanmon-server 2>/dev/null | grep -q "installed\|config-files"'
check "the users stay (Debian keeps system users; userdel removes them)" sh -c 'getent passwd lanmon >/dev/null && getent passwd lanmon-agent >/dev/null'

step "lintian"
if command -v lintian >/dev/null; then
    # Every tag lintian reports here is listed in the README (Packaging) with its reason.
    out=$(lintian --tag-display-limit 0 --fail-on error,warning "$server_deb" "$agent_deb" 2>&1) && rc=0 || rc=$?
    printf '%s\n' "$out" | sed 's/^/  | /'
    [ "$rc" = 0 ] || fail "lintian reports errors or warnings"
    printf '  ok: lintian: no errors or warnings\n'
else
    echo "  lintian: SKIPPED (not installed: apt-get install lintian)"
fi

printf '\ndeb-test: all checks passed\n'
