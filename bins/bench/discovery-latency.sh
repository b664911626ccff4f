#!/usr/bin/env bash
# Time from `agent --discover` start to `live` on the server, on one machine.
#
# A server beacons to 127.255.255.255 only, at its default 1 s interval, and reports a JSON
# snapshot every 50 ms. Each round starts one discovering agent (default 5 s interval: its
# first sample is sent right after it connects) and measures the time until the server's
# snapshot shows it `live`. Secure default: the agents join with the server's token (made
# first by `server token`), each with a fresh state directory, so every round includes the
# handshake and enrollment. Prints one line per round and a summary line:
#   discovery start->live: n=R median=… p90=… max=… ms
# Everything runs inside a private network namespace (unshare -n) as a safety net.
# Usage: bins/bench/discovery-latency.sh [BIN_DIR] [ROUNDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${1:-$root/target/release}
rounds=${2:-10}
[ -x "$bin/server" ] && [ -x "$bin/agent" ] || { echo "build first: cargo build --release" >&2; exit 1; }
if [ -z "${LANMON_IN_NETNS:-}" ]; then
  exec unshare -n env LANMON_IN_NETNS=1 bash -c 'ip link set lo up && exec "$0" "$@"' "$0" "$bin" "$rounds"
fi

work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null || true
  pkill -TERM -f "$bin/agent --discover" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

udp=18123
token=$("$bin/server" token --data-dir "$work/data")
"$bin/server" --bind 127.0.0.1:0 --no-http --no-store --data-dir "$work/data" \
  --report-format json --report-interval 50ms --beacon-to 127.255.255.255 --discovery-port "$udp" --quiet >"$work/snap" 2>"$work/err" &
server_pid=$!

now_ms() { date +%s%3N; }
times=()
for i in $(seq 1 "$rounds"); do
  name="bench-$i"
  start=$(now_ms)
  "$bin/agent" --discover --discovery-port "$udp" --name "$name" --join "$token" \
    --state-dir "$work/agent-$i" --quiet >/dev/null 2>&1 &
  agent=$!
  deadline=$((start + 10000))
  while :; do
    line=$(tail -n 1 "$work/snap" 2>/dev/null || true)
    if [ -n "$line" ] &&
      jq -e --arg n "$name" 'any(.agents[]; .name == $n and .status == "live")' <<<"$line" >/dev/null 2>&1; then
      break
    fi
    [ "$(now_ms)" -lt "$deadline" ] || { echo "round $i: not live within 10 s" >&2; exit 1; }
    sleep 0.01
  done
  took=$(( $(now_ms) - start ))
  times+=("$took")
  echo "round $i: ${took} ms"
  kill -TERM "$agent"; wait "$agent" 2>/dev/null || true
  # Start the next agent at a random phase of the beacon interval (not a synchronisation).
  sleep "0.$(printf '%03d' $((RANDOM % 1000)))"
done

sorted=($(printf '%s\n' "${times[@]}" | sort -n))
n=${#sorted[@]}
median=${sorted[$(( (n - 1) / 2 ))]}
p90=${sorted[$(( (n * 9 + 9) / 10 - 1 ))]}
max=${sorted[$((n - 1))]}
echo "discovery start->live: n=$n median=${median} p90=${p90} max=${max} ms"
