#!/usr/bin/env bash
# Runs fuzz targets one after the other, each for SECONDS (default 620)
# under nice, with its seeds, dictionary and kept regression inputs; logs
# to fuzz/logs/<target>.log. Usage (from anywhere):
#   bash fuzz/run.sh [target ...]        (default: every target)
#   SECONDS_PER_TARGET=60 bash fuzz/run.sh mqtt_front
set -uo pipefail
cd "$(dirname "$0")"
secs=${SECONDS_PER_TARGET:-620}
all=(rpc_params signature_v1 signature_v3 policy mqtt_front mqtt_link emqx_query config_toml)
[ $# -gt 0 ] && targets=("$@") || targets=("${all[@]}")
declare -A dict=(
    [rpc_params]=rpc [signature_v1]=rpc [signature_v3]=rpc [policy]=policy
    [mqtt_front]=mqtt [mqtt_link]=mqtt [emqx_query]=emqx [config_toml]=config
)
mkdir -p logs
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    extra=()
    [ -d "regressions/$t" ] && extra+=("regressions/$t")
    echo "== $t: $(date -u +%FT%TZ), ${secs}s" | tee "logs/$t.log"
    nice -n 19 cargo fuzz run --sanitizer none "$t" "corpus/$t" "seeds/$t" "${extra[@]}" -- \
        -max_total_time="$secs" -print_final_stats=1 -dict="dict/${dict[$t]}.dict" \
        -artifact_prefix="artifacts/$t/" >> "logs/$t.log" 2>&1
    echo "== $t: exit $? at $(date -u +%FT%TZ)" | tee -a "logs/$t.log"
done
