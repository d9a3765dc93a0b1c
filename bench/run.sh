#!/usr/bin/env bash
# Runs the whole benchmark and writes bench/results.md, bench/*.csv and the
# plots bench/*.png. Usage: bash bench/run.sh   (about 18 minutes on 2 cores).
# One section alone, printed, bench/ untouched:
#   MQGATE_BENCH_ONLY=tracing cargo bench --bench system -- --full
# (sections: rpc, registry, mqtt, logins, tracing, trace_query, idle)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check matplotlib==3.10.7
cargo bench --locked --bench system -- --full
.venv/bin/python bench/plot.py
echo "bench/results.md written"
