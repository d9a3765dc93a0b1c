#!/usr/bin/env bash
# Runs the whole benchmark and writes bench/results.md, bench/*.csv and the
# plots bench/*.png. Usage: bash bench/run.sh   (about 30 minutes on 2 cores).
# One section alone, printed, bench/ untouched:
#   MQGATE_BENCH_ONLY=tracing cargo bench --bench system -- --full
# (sections: rpc, registry, mqtt, logins, tracing, trace_query, idle,
# capacity, connect_rate, flood, slow_subscriber, hostile, cluster)
# The device-edge sections (idle to slow_subscriber) start the mqgate binary
# named by MQGATE_BENCH_MQGATE instead of the one just built, if set: another
# build measured by the same client side.
set -euo pipefail
cd "$(dirname "$0")/.."
# The device-edge sections hold up to 10,000 idle devices in the benchmark's
# own process (each server, rumqttd and client process it starts raises its
# own soft limit the same way).
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
# The RPC section also drives the servers with wrk (Debian's package).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
# The cluster section starts Debian's redis-server.
need_apt=()
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check matplotlib==3.10.7
cargo bench --locked --bench system -- --full
.venv/bin/python bench/plot.py
echo "bench/results.md written"
