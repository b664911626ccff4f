#!/usr/bin/env bash
# Discovery on a real (virtual) multi-host LAN, built from network namespaces.
#
#   integration-tests/netns/lan-discovery.sh [BIN_DIR]     (root; BIN_DIR default: target/debug)
#
# The LAN: a bridge in its own namespace and five "hosts" h1..h5 (10.231.0.1..5/24), each a
# namespace with only lo and one veth. Nothing is created in the main namespace, and the whole
# script additionally runs inside a private network namespace (`unshare --net`) as a safety
# net: every packet the test produces stays on loopback or inside the namespaces created here.
# The servers use their DEFAULT beacon targets, which is safe only because inside a host
# namespace those are 127.255.255.255 and 10.231.0.255 (never start a server in the main
# namespace with default targets: it would broadcast on every real interface).
#
# Secure default (protocol 2): the server's identity lives in its data directory ($TMP/srv);
# the agents join with the token its banner prints (`agent --discover --join lm2-…`), each
# with a state directory of its own (its key).
#
# Checks:
#   1. server in h1 (default beacon targets) + `agent --discover --join TOKEN` in h2, h3, h4:
#      all three agents become live, authenticated (`auth: approved`), each with its own IP;
#      the server beaconed to 10.231.0.255:8080 (and nowhere but there and loopback).
#   2. the server stops (SIGTERM) and starts again in h5 with the same data directory (the
#      server moved to another machine, its identity with it): the agents find it and are live
#      on it with their IPs (each agent logged "Discovered server" twice: h1, then h5).
#   3. malformed, oversized and foreign datagrams, and a well-formed but unsigned beacon of a
#      fake server, broadcast to the discovery port: agents stay live, their seq keeps
#      advancing, no reconnect, none takes the fake server, one rate-limited warning per agent.
#   4. cleanup leaves no namespace and no process behind.
# Prints PASS/FAIL per check and a final line `N passed, M failed`; exit 0 only if M is 0.
# Exit 1 at once if not root or a tool (ip, jq, python3) or a binary is missing.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
BIN_DIR=${1:-$REPO_ROOT/target/debug}

die() {
    echo "lan-discovery: $*" >&2
    exit 1
}

# --- preconditions -------------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "must run as root (it creates network namespaces)"
command -v ip >/dev/null 2>&1 || die "\`ip\` (iproute2) is missing"
command -v jq >/dev/null 2>&1 || die "\`jq\` is missing"
PYTHON=$(command -v python3 2>/dev/null) || die "\`python3\` is missing (it sends the junk datagrams)"
[[ -d $BIN_DIR ]] || die "binary directory $BIN_DIR does not exist (cargo build --workspace --bins)"
BIN_DIR=$(cd "$BIN_DIR" && pwd)
for bin in server agent; do
    [[ -x $BIN_DIR/$bin ]] || die "$BIN_DIR/$bin is missing (cargo build --workspace --bins)"
done

# --- safety net: run the rest in a private network namespace (only lo) ----------------------
if [[ -z ${LMNETNS_ISOLATED:-} ]] && command -v unshare >/dev/null 2>&1; then
    if unshare --net true 2>/dev/null; then
        export LMNETNS_ISOLATED=1
        exec unshare --net -- bash "$SCRIPT" "$BIN_DIR"
    fi
    echo "lan-discovery: note: \`unshare --net\` failed; running without the extra safety net" >&2
fi
[[ -n ${LMNETNS_ISOLATED:-} ]] && ip link set lo up

KEEP_LOGS=${LANMON_TEST_KEEP_LOGS:-} # set it to keep the temp directory with the logs
# The binaries read LANMON_* (e.g. LANMON_BEACON_TO, LANMON_HOST) and RUST_LOG from the
# environment: clear them so the servers really use their defaults and log at info level.
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(LANMON_|RUST_LOG$)' || true)
export NO_COLOR=1

# --- state and cleanup ----------------------------------------------------------------------
PREFIX="lmdisc$$"
NS_BR="$PREFIX-br"
declare -a NAMESPACES=() # created, in creation order
declare -a PIDS=()       # every background process started
declare -A LABEL=()      # pid -> what it is
TMP=$(mktemp -d "${TMPDIR:-/tmp}/lan-discovery.XXXXXX")
CLEANED=

cleanup() {
    [[ -n $CLEANED ]] && return 0
    CLEANED=1
    set +e
    local pid ns i
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    # Anything else still inside our namespaces (they hold only what this script started).
    for ns in "${NAMESPACES[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null; done
    done
    for i in $(seq 50); do # up to 5 s for a clean exit
        local alive=
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [[ -z $alive ]] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    for ns in "${NAMESPACES[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    for ((i = ${#NAMESPACES[@]} - 1; i >= 0; i--)); do
        ip netns del "${NAMESPACES[i]}" 2>/dev/null ||
            echo "lan-discovery: could not delete namespace ${NAMESPACES[i]}" >&2
    done
    if [[ -n $KEEP_LOGS ]]; then
        echo "lan-discovery: logs kept in $TMP" >&2
    else
        rm -rf "$TMP"
    fi
    set -e
}

on_trap() {
    local rc=$? what=$1
    trap - EXIT INT TERM
    case $what in
    INT) rc=130 ;;
    TERM) rc=143 ;;
    esac
    cleanup
    exit "$rc"
}
for sig in EXIT INT TERM; do
    # shellcheck disable=SC2064
    trap "on_trap $sig" "$sig"
done

# --- helpers --------------------------------------------------------------------------------
PASSED=0
FAILED=0
pass() {
    PASSED=$((PASSED + 1))
    printf 'PASS  %s\n' "$*"
}
fail() {
    FAILED=$((FAILED + 1))
    printf 'FAIL  %s\n' "$*"
}
check() { # check DESCRIPTION COMMAND...
    local desc=$1
    shift
    if "$@"; then pass "$desc"; else fail "$desc"; fi
}

now_ms() {
    local t=${EPOCHREALTIME//[.,]/}
    echo $((10#$t / 1000))
}
START_MS=$(now_ms)

# Background process in a namespace: start_in NS LABEL OUT ERR CMD...; sets LAST_PID.
start_in() {
    local ns=$1 label=$2 out=$3 err=$4
    shift 4
    ip netns exec "$ns" "$@" >"$out" 2>"$err" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    LABEL[$LAST_PID]=$label
}

# Processes that must stay alive while waiting (pids).
declare -a MUST_LIVE=()

# wait_for SECONDS COMMAND...: polls COMMAND every 100 ms. Fails at the deadline or as soon
# as a process in MUST_LIVE has exited. Sets WAITED (seconds, for the report) and WHY.
wait_for() {
    local limit_ms=$(($1 * 1000)) start pid
    shift
    start=$(now_ms)
    WHY=
    while true; do
        if "$@"; then
            WAITED=$(awk -v ms=$(($(now_ms) - start)) 'BEGIN { printf "%.1fs", ms / 1000 }')
            return 0
        fi
        for pid in "${MUST_LIVE[@]}"; do
            if ! kill -0 "$pid" 2>/dev/null; then
                WHY="${LABEL[$pid]} (pid $pid) exited early"
                return 1
            fi
        done
        if (($(now_ms) - start >= limit_ms)); then
            WHY="not within ${limit_ms} ms"
            return 1
        fi
        sleep 0.1
    done
}

# The latest complete JSON snapshot a server printed (its stdout's last line).
last_snapshot() {
    local line
    line=$(tail -n 1 "$1" 2>/dev/null) || return 1
    [[ -n $line ]] || return 1
    printf '%s\n' "$line"
}
# snap FILE JQ-ARGS...: jq -e on the latest snapshot, quiet.
snap() {
    local file=$1
    shift
    last_snapshot "$file" | jq -e "$@" >/dev/null 2>&1
}

# Agent name -> the IP it must be seen from.
WANT='{"agent2":"10.231.0.2","agent3":"10.231.0.3","agent4":"10.231.0.4"}'
# Exactly these three agents, all live, each from its own IP, with samples.
JQ_ALL_LIVE='([.agents[].name] | sort) == ($want | keys)
  and all(.agents[]; .status == "live" and .auth == "approved" and .ip == $want[.name] and .seq > 0)'
all_live_on() { snap "$1" --argjson want "$WANT" "$JQ_ALL_LIVE"; }

# Aborts the run when a later check depends on a failed one.
abort_if_failed() {
    if ((FAILED > 0)); then
        echo "aborting: the remaining checks depend on the failed one"
        finish
    fi
}

dump_logs() {
    local f
    echo "----- diagnostics (log tails; agents' per-sample \"Sent\" lines left out) -----"
    for f in "$TMP"/*.err "$TMP"/*.log; do
        [[ -e $f ]] || continue
        echo "--- $(basename "$f")"
        grep -v 'Sent [0-9]* bytes (seq' "$f" | tail -n 15 || true
    done
    for f in "$TMP"/*.out; do
        [[ -e $f ]] || continue
        echo "--- $(basename "$f") (latest snapshot, agents)"
        last_snapshot "$f" | jq -c '.summary, (.agents[] | {name, ip, status, seq, offline_reason})' 2>/dev/null ||
            tail -c 600 "$f"
    done
    echo "-----"
}

finish() {
    ((FAILED > 0)) && dump_logs
    cleanup
    local left pid alive=""
    left=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -c "^$PREFIX-" || true)
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=" $pid"; done
    check "cleanup: no namespace ($PREFIX-*) and no started process left" \
        test "$left" -eq 0 -a -z "$alive"
    echo "run time: $(awk -v ms=$(($(now_ms) - START_MS)) 'BEGIN { printf "%.1fs", ms / 1000 }')"
    echo "$PASSED passed, $FAILED failed"
    ((FAILED == 0)) && exit 0
    exit 1
}

# --- the LAN --------------------------------------------------------------------------------
ip netns add "$NS_BR"
NAMESPACES+=("$NS_BR")
ip -n "$NS_BR" link add br0 type bridge
ip -n "$NS_BR" link set br0 up
for i in 1 2 3 4 5; do
    ns="$PREFIX-h$i"
    ip netns add "$ns"
    NAMESPACES+=("$ns")
    ip -n "$ns" link add eth0 type veth peer name "v$i" netns "$NS_BR"
    ip -n "$NS_BR" link set "v$i" master br0
    ip -n "$NS_BR" link set "v$i" up
    ip -n "$ns" addr add "10.231.0.$i/24" brd + dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
done
echo "LAN: $NS_BR + $PREFIX-h1..h5 (10.231.0.1..5/24); logs in $TMP"

# --- 1. server in h1, agents in h2..h4 ------------------------------------------------------
# --no-store: a test must leave no history behind; the identity (keys, agents.json) lives in
# $TMP/srv, which both servers use (never at once).
SERVER_ARGS=(--bind 0.0.0.0:8080 --report-format json --report-interval 200ms --beacon-interval 200ms
    --no-store --data-dir "$TMP/srv")
start_in "$PREFIX-h1" "server 1 (h1)" "$TMP/server1.out" "$TMP/server1.err" \
    "$BIN_DIR/server" --name lan-srv1 "${SERVER_ARGS[@]}"
SRV1=$LAST_PID
MUST_LIVE+=("$SRV1")
has_token() { grep -q -- '--join lm2-' "$TMP/server1.err"; }
if wait_for 10 has_token; then
    TOKEN=$(grep -o -m 1 -- '--join lm2-[0-9A-Z]*' "$TMP/server1.err" | cut -d' ' -f2)
    check "server 1 printed the join command (agent --discover --join lm2-…)" \
        grep -q -- "agent --discover --join $TOKEN" "$TMP/server1.err"
else
    fail "server 1 printed a join token: $WHY"
    finish
fi
declare -a AGENTS=()
for i in 2 3 4; do
    start_in "$PREFIX-h$i" "agent$i (h$i)" "$TMP/agent$i.log" "$TMP/agent$i.log" \
        "$BIN_DIR/agent" --discover --join "$TOKEN" --state-dir "$TMP/agent$i.state" \
        --interval 300ms --name "agent$i"
    AGENTS+=("$LAST_PID")
    MUST_LIVE+=("$LAST_PID")
done

if wait_for 20 all_live_on "$TMP/server1.out"; then
    pass "3 agents discovered server 1 (h1) and are live, authenticated, with their own IPs ($WAITED)"
else
    fail "3 agents discovered server 1 (h1) and are live, authenticated, with their own IPs: $WHY"
fi
abort_if_failed

beacon_targets() { # the targets of the last "announcing" line of a server's log
    grep -F 'beacon: announcing every' "$1" | tail -n 1 | sed 's/.* to //' | tr -d ' ' | tr ',' '\n' | sort | paste -sd, -
}
targets1=$(beacon_targets "$TMP/server1.err")
check "server 1 beaconed to 10.231.0.255:8080 (default targets: $targets1)" \
    grep -Eq 'beacon: announcing every .* to .*10\.231\.0\.255:8080' "$TMP/server1.err"
check "server 1's default targets are only loopback and the test LAN" \
    test "$targets1" = "10.231.0.255:8080,127.255.255.255:8080"
SRV1_ID=$(last_snapshot "$TMP/server1.out" | jq -r .server.id)

# --- 2. the server moves: stop it, start another in h5 --------------------------------------
MUST_LIVE=("${AGENTS[@]}")
kill -TERM "$SRV1"
srv1_gone() { ! kill -0 "$SRV1" 2>/dev/null; }
if wait_for 10 srv1_gone; then
    rc=0
    wait "$SRV1" || rc=$?
    check "server 1 stopped on SIGTERM with exit code 0 (got $rc, $WAITED)" test "$rc" -eq 0
else
    fail "server 1 stopped on SIGTERM: $WHY"
fi

start_in "$PREFIX-h5" "server 2 (h5)" "$TMP/server2.out" "$TMP/server2.err" \
    "$BIN_DIR/server" --name lan-srv2 "${SERVER_ARGS[@]}"
SRV2=$LAST_PID
MUST_LIVE+=("$SRV2")
if wait_for 20 all_live_on "$TMP/server2.out"; then
    pass "3 agents followed the server to h5 (10.231.0.5) and are live there with their IPs ($WAITED)"
else
    fail "3 agents followed the server to h5 (10.231.0.5) and are live there with their IPs: $WHY"
fi
abort_if_failed
SRV2_ID=$(last_snapshot "$TMP/server2.out" | jq -r .server.id)
SRV2_NAME=$(last_snapshot "$TMP/server2.out" | jq -r .server.name)
check "the second snapshot comes from the moved server (same identity $SRV2_ID, now $SRV2_NAME in h5)" \
    test "$SRV2_ID" = "$SRV1_ID" -a "$SRV2_NAME" = lan-srv2
check "server 2 beaconed to 10.231.0.255:8080" \
    grep -Eq 'beacon: announcing every .* to .*10\.231\.0\.255:8080' "$TMP/server2.err"

discovered_twice() { # agent log: exactly two discoveries, h1 then h5
    local found
    found=$(grep -o 'Discovered server .*' "$1" | sed 's/\x1b\[[0-9;]*m//g')
    [[ $(wc -l <<<"$found") -eq 2 ]] &&
        [[ $(sed -n 1p <<<"$found") == "Discovered server lan-srv1 at 10.231.0.1:8080" ]] &&
        [[ $(sed -n 2p <<<"$found") == "Discovered server lan-srv2 at 10.231.0.5:8080" ]]
}
for i in 2 3 4; do
    check "agent$i logged \"Discovered server\" twice: lan-srv1 at 10.231.0.1, then lan-srv2 at 10.231.0.5" \
        discovered_twice "$TMP/agent$i.log"
done

# --- 3. junk on the discovery port ----------------------------------------------------------
seq_map() { last_snapshot "$TMP/server2.out" | jq -c '[.agents[] | {key: .name, value: .seq}] | from_entries'; }
SEQ_BEFORE=$(seq_map)
declare -A CONNECTS_BEFORE=()
for i in 2 3 4; do
    CONNECTS_BEFORE[$i]=$(grep -c 'Connected to' "$TMP/agent$i.log" || true)
done

# From h1 (no server there any more) to the LAN's broadcast address, port 8080.
cat >"$TMP/junk.py" <<'EOF'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
beacon = b'{"service":"lanmon","proto":1,"server_id":"evil","server_name":"evil","port":9'
oversized = beacon + b" " * (2000 - len(beacon) - 1) + b"}"   # valid JSON, but 2000 bytes
assert len(oversized) == 2000
payloads = [
    b"",                                   # empty
    b"\xff\x00garbage\x01{{{",             # malformed, not UTF-8
    b'{"service":"lanmon","proto":1,',     # truncated JSON
    oversized,                             # too long
    b"x" * 2000,                           # too long, not JSON
    b'{"service":"other","proto":1,"server_id":"a","server_name":"b","port":1}',  # foreign
    b'{"hello":"world"}',                  # foreign
    b"[1,2,3]",                            # foreign
    b'{"service":"lanmon","proto":99,"server_id":"a","server_name":"b","port":9}',  # newer
    b'{"service":"lanmon","proto":1,"server_id":"","server_name":"b","port":9}',    # invalid
    # well-formed, but unsigned: a fake server in h1 (what a protocol-1 agent would take)
    b'{"service":"lanmon","proto":1,"server_id":"evil","server_name":"evil","port":9}',
]
sent = 0
for _ in range(5):
    for p in payloads:
        s.sendto(p, ("10.231.0.255", 8080))
        sent += 1
print(sent)
EOF
junk_rc=0
junk_out=$(ip netns exec "$PREFIX-h1" "$PYTHON" "$TMP/junk.py" 2>&1) || junk_rc=$?
check "sent junk datagrams (malformed, 2000-byte, foreign JSON) to 10.231.0.255:8080 from h1 (${junk_out//$'\n'/ } sent)" \
    test "$junk_rc" -eq 0

still_fine() { # all live, every seq at least 4 samples past the junk, every agent warned
    local i
    snap "$TMP/server2.out" --argjson want "$WANT" --argjson before "$SEQ_BEFORE" \
        "($JQ_ALL_LIVE) and all(.agents[]; .seq >= \$before[.name] + 4)" || return 1
    for i in 2 3 4; do grep -q 'ignored a datagram' "$TMP/agent$i.log" || return 1; done
}
if wait_for 20 still_fine; then
    pass "after the junk all agents are still live and their seq advanced (before: $SEQ_BEFORE, after: $(seq_map); $WAITED)"
else
    fail "after the junk all agents are still live and their seq advanced (before: $SEQ_BEFORE, now: $(seq_map)): $WHY"
fi
for i in 2 3 4; do
    warnings=$(grep -c 'ignored a datagram' "$TMP/agent$i.log" || true)
    check "agent$i logged exactly one rate-limited \"ignored a datagram\" warning (got $warnings)" \
        test "$warnings" -eq 1
    connects=$(grep -c 'Connected to' "$TMP/agent$i.log" || true)
    check "agent$i kept its connection through the junk (\"Connected to\" lines: ${CONNECTS_BEFORE[$i]} -> $connects)" \
        test "$connects" -eq "${CONNECTS_BEFORE[$i]}"
    check "agent$i took none of the junk for a server" \
        bash -c '! grep -Eq "also hearing server|Discovered server evil|Discovered server b " "$1"' _ "$TMP/agent$i.log"
done

finish
