#!/usr/bin/env bash
# `make demo`: a server and two agents on this machine, loopback only. One agent finds the
# server by --host, the other by --discover (the beacon goes to 127.255.255.255 only). Secure
# by default: the server's identity is made first (`server token`), and both agents join with
# its token (each with a state directory of its own). Ctrl+C stops all three.
set -euo pipefail
bin=${1:-target/release}
port=${2:-8080}
discovery_port=$((port + 1000))
pids=()
logs=$(mktemp -d)
stop() {
  trap - INT TERM EXIT
  # Background children of a non-interactive shell ignore SIGINT: stop them with SIGTERM.
  [ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$logs"
  echo "demo stopped"
}
trap stop INT TERM EXIT
# The server's identity (keys, login tokens) before anything runs: the agents need its token.
token=$("$bin/server" token --data-dir "$logs/data")
"$bin/agent" --host 127.0.0.1 --port "$port" --join "$token" --state-dir "$logs/agent1" \
  --interval 1s --name demo-agent-1 --quiet >"$logs/agent1.log" 2>&1 &
pids+=($!)
"$bin/agent" --discover --discovery-port "$discovery_port" --join "$token" \
  --state-dir "$logs/agent2" --interval 1s --name demo-agent-2 --quiet >"$logs/agent2.log" 2>&1 &
pids+=($!)
http_port=$((port + 1))
login=$(cat "$logs/data/http.token")
echo "demo: server on 127.0.0.1:$port, dashboard on http://127.0.0.1:$http_port/?token=$login (also /api/agents, /metrics with Authorization: Bearer $login), agents' logs in $logs; Ctrl+C stops all"
# In the foreground, so Ctrl+C reaches it directly; the EXIT trap then stops the agents.
# History goes to a throwaway directory: the demo leaves nothing behind.
"$bin/server" --bind "127.0.0.1:$port" --http "127.0.0.1:$http_port" --report-interval 2s \
  --data-dir "$logs/data" --beacon-to 127.255.255.255 --discovery-port "$discovery_port" \
  --name demo || true
