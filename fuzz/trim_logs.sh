#!/usr/bin/env bash
# Keeps the part of each run's log worth committing (fuzz/logs/ is not
# committed: libFuzzer writes a line per new input, megabytes per run):
# the run's start and end, libFuzzer's INFO lines, its periodic "pulse"
# lines, the final DONE line and stats, and any crash report.
# Writes fuzz/results/<target>.txt.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p results
for log in logs/*.log; do
    t=$(basename "$log" .log)
    grep -aE '^== |^INFO:|pulse|DONE|^stat::|^Done [0-9]+ runs|panicked|ERROR|SUMMARY|Test unit written|^MS:|^artifact_prefix' "$log" \
        > "results/$t.txt" || true
done
