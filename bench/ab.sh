#!/usr/bin/env bash
# Compares two builds of mqgate on the RPC path, side by side in one run:
#   - instructions per QuerySessionByClientId call (valgrind's callgrind: the
#     server's total over 3,000 calls minus its total over 1,000, / 2,000;
#     repeatable whatever else the machine does);
#   - the server's CPU time per call and its throughput at 100 connections
#     (from /proc/PID/stat; rounds of A and B interleaved);
#   - HTTP latency at 8 connections while 6,000 MQTT clients connect at once
#     (a CONNECT storm), against the same without the storm.
# Usage: bash bench/ab.sh OLD_BIN_DIR NEW_BIN_DIR [ROUNDS]
#   each BIN_DIR holds release builds of mqgate and mqgate-load
#   (cargo build --release --bins; for an older commit, a git worktree).
set -euo pipefail
A=$1; B=$2; ROUNDS=${3:-3}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)"; exit 2; }

# start_server BIN_DIR DIR [valgrind] -> sets PID, HTTP, MQTT
start_server() {
    local bin=$1 dir=$2 wrap=${3:-}
    cat > "$dir/c.toml" <<TOML
[http]
listen = "127.0.0.1:0"
[mqtt]
listen = "127.0.0.1:0"
anonymous_instance = "post-cn-ab"
[storage]
dir = "$dir/data"
[limits]
QuerySessionByClientId = 1000000
[[accounts]]
id = "1234567890"
  [[accounts.instances]]
  id = "post-cn-ab"
  [[accounts.users]]
  name = "root"
  access_key_id = "testid"
  access_key_secret = "testsecret"
  root = true
TOML
    if [ -n "$wrap" ]; then
        valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$bin/mqgate" serve --config "$dir/c.toml" > "$dir/out" 2> "$dir/err" &
    else
        "$bin/mqgate" serve --config "$dir/c.toml" > "$dir/out" 2> "$dir/err" &
    fi
    PID=$!
    for _ in $(seq 600); do grep -q listening "$dir/out" 2>/dev/null && break; sleep 0.1; done
    HTTP=$(head -1 "$dir/out" | sed 's/.*http=\([^ ]*\).*/\1/')
    MQTT=$(head -1 "$dir/out" | sed 's/.*mqtt=\([^ ]*\).*/\1/')
}

stop_server() { kill -TERM "$PID"; wait "$PID" || true; }

load() { # BIN_DIR ARGS...
    local bin=$1; shift
    "$bin/mqgate-load" run --url "http://$HTTP" --quiet --json \
        --param InstanceId=post-cn-ab --param ClientId=c "$@"
}

instructions() { # BIN_DIR REQUESTS -> total instructions
    local dir; dir=$(mktemp -d)
    start_server "$1" "$dir" valgrind
    load "$1" --connections 1 --requests "$2" > /dev/null
    stop_server
    grep -E "^totals:" "$dir/cg.out" | awk '{print $2}'
    rm -rf "$dir"
}

cpu_per_call() { # BIN_DIR -> "rps cpu_us_per_call"
    local dir t0 t1; dir=$(mktemp -d)
    start_server "$1" "$dir"
    load "$1" --connections 100 --duration 1 > /dev/null
    t0=$(awk '{print $14+$15}' "/proc/$PID/stat")
    load "$1" --connections 100 --duration 4 > "$dir/r.json"
    t1=$(awk '{print $14+$15}' "/proc/$PID/stat")
    stop_server
    python3 - "$dir/r.json" "$t0" "$t1" <<'PY'
import json, os, sys
d = json.load(open(sys.argv[1]))
calls = d["answers"].get("200", 0)
cpu = (int(sys.argv[3]) - int(sys.argv[2])) / os.sysconf("SC_CLK_TCK")
print("%.0f %.1f" % (d["requests_per_second"], cpu / calls * 1e6))
PY
    rm -rf "$dir"
}

storm() { # BIN_DIR CLIENTS -> "rps p99_ms" of HTTP calls, with CLIENTS connecting 2 s in
    local dir; dir=$(mktemp -d)
    start_server "$1" "$dir"
    load "$1" --connections 8 --duration 8 > "$dir/http.json" &
    local pid_load=$!
    if [ "$2" -gt 0 ]; then
        sleep 2
        "$1/mqgate-load" mqtt --addr "$MQTT" --clients "$2" --duration 0.2 --json > /dev/null 2>&1 || true
    fi
    wait $pid_load
    stop_server
    python3 -c "import json; d=json.load(open('$dir/http.json')); print('%.0f %.2f' % (d['requests_per_second'], d['p99_ms']))"
    rm -rf "$dir"
}

echo "A = $A"
echo "B = $B"
echo
echo "instructions per call (callgrind, 1 connection):"
for side in A B; do
    bin=${!side}
    small=$(instructions "$bin" 1000); large=$(instructions "$bin" 3000)
    echo "  $side: $(( (large - small) / 2000 ))"
done
echo
echo "100 connections, rounds interleaved: req/s, server CPU µs per call"
for r in $(seq "$ROUNDS"); do
    for side in A B; do echo "  round $r $side: $(cpu_per_call "${!side}")"; done
done
echo
echo "HTTP at 8 connections: req/s, p99 ms; without, then with a 6,000-client CONNECT storm"
for r in $(seq "$ROUNDS"); do
    for side in A B; do
        echo "  round $r $side: quiet $(storm "${!side}" 0); storm $(storm "${!side}" 6000)"
    done
done
