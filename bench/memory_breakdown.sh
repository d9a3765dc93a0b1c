#!/usr/bin/env bash
# Where an idle MQTT 3.1.1 device's memory goes in mqgate's process
# (issue 15's breakdown; bench/results.md, "Where an idle device's memory
# goes"). Not part of the tests; run it by hand, before and after a change:
#
#   bash bench/memory_breakdown.sh [DEVICES]      # default 1000
#
# What it does, each time on a fresh mqgate with one instance (the config of
# `cargo bench --bench system`, tracing on as by default):
#  1. RSS: the release build (mimalloc, as shipped) before and after DEVICES
#     idle clients connect (bench/idle_clients.py: CONNECT, CONNACK, then
#     nothing), with mimalloc's transparent huge pages allowed (its default)
#     and not (MIMALLOC_ALLOW_THP=0); the kernel's TCP memory
#     (/proc/net/sockstat) and socket objects (/proc/slabinfo), threads and
#     descriptors beside it.
#  2. Allocation sites: a build with the system allocator and line tables
#     (`--profile profiling --features system-alloc`) under heaptrack (raw
#     mode), once with no client and once with DEVICES; just before each is
#     killed (SIGKILL, so that nothing is freed), the resident pages of its
#     memory are read from /proc/PID/pagemap. bench/memory_breakdown.py
#     groups the live allocations by call site and prints bytes per device
#     (loaded run minus empty run, / DEVICES): allocated, and resident.
#  3. The sizes of rumqttd's queue elements (tests/rumqttd_sizes.rs), and
#     with TYPE_SIZES=1 the sizes of the per-connection futures (a nightly
#     toolchain's -Zprint-type-sizes; a full release build of its own, about
#     7 minutes on 2 cores, in $TARGET/nightly).
#
# After a change (say, the front layer rewritten): allocations at sites the
# groups in memory_breakdown.py (RULES) do not name yet land in its "other"
# and "unattributed" rows; the report's second table lists every site
# anyway, so add rules for the new ones.
#
# Output: $OUT (default target/memory-breakdown/): report.md (the tables),
# rss.txt, sizes.txt, heaptrack files (heaptrack_print -f loaded.zst
# --print-leaks 1 shows every stack). Needs: heaptrack (apt-get install
# heaptrack), zstd, addr2line (binutils), python3; about 20,000 descriptors
# for 6,000 devices (3 per device in mqgate, 1 in the client).
set -euo pipefail

DEVICES=${1:-1000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET/memory-breakdown}
mkdir -p "$OUT"
cd "$ROOT"

for tool in heaptrack zstd addr2line python3; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done

echo "== building (release; profiling with the system allocator)" >&2
cargo build --release --bin mqgate >&2
cargo build --profile profiling --features system-alloc --bin mqgate >&2
cargo test --release --test rumqttd_sizes -- --nocapture 2>/dev/null | grep -E '^(size_of|VecDeque)' > "$OUT/sizes.txt"
RELEASE=$TARGET/release/mqgate
PROFILING=$TARGET/profiling/mqgate

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
WORK=$(mktemp -d)
CLIENTS_PID=
SERVER_PID=
cleanup() {
    [ -n "$CLIENTS_PID" ] && kill "$CLIENTS_PID" 2>/dev/null || true
    [ -n "$SERVER_PID" ] && kill -9 "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

config() { # $1: storage directory
    cat <<EOF
[http]
listen = "127.0.0.1:0"
[mqtt]
listen = "127.0.0.1:0"
max_connections_per_instance = 20000
anonymous_instance = "post-cn-bench"
[storage]
dir = "$1"
[trace]
enabled = true
[[accounts]]
id = "1234567890"
  [[accounts.instances]]
  id = "post-cn-bench"
  [[accounts.users]]
  name = "root"
  access_key_id = "testid"
  access_key_secret = "testsecret"
  root = true
EOF
}

# Waits for mqgate's first line in $1; prints the MQTT address.
mqtt_addr() {
    for _ in $(seq 600); do
        if grep -q 'mqtt=' "$1" 2>/dev/null; then
            grep -o 'mqtt=[0-9.:]*' "$1" | head -1 | cut -d= -f2
            return
        fi
        sleep 0.1
    done
    echo "mqgate did not start: $(cat "$1")" >&2
    exit 1
}

# Connects $2 idle clients to $1 and waits until all have their CONNACK.
connect_clients() {
    CLIENTS_PID=
    [ "$2" -eq 0 ] && return
    python3 "$ROOT/bench/idle_clients.py" "$1" "$2" > "$WORK/clients.out" 2>&1 &
    CLIENTS_PID=$!
    for _ in $(seq 3000); do
        grep -q '^connected' "$WORK/clients.out" 2>/dev/null && return
        kill -0 "$CLIENTS_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "clients failed: $(cat "$WORK/clients.out")" >&2
    exit 1
}

stop_clients() {
    if [ -n "$CLIENTS_PID" ]; then
        kill "$CLIENTS_PID" 2>/dev/null || true
        wait "$CLIENTS_PID" 2>/dev/null || true
    fi
    CLIENTS_PID=
}

status() { # $1: pid
    awk '/^(VmRSS|RssAnon|RssFile|Threads):/ {printf "%s %s ", $1, $2} END {print ""}' "/proc/$1/status"
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
tcp_mem() { awk '/^TCP:/ {print $NF}' /proc/net/sockstat; }
# Kernel objects behind sockets (bytes in the slab caches; readable as root):
# not in any process's RSS.
socket_slabs() {
    awk '$1 ~ /^(TCP|sock_inode_cache|filp|dentry|eventpoll_epi|eventpoll_pwq)$/ {s += $3 * $4} END {print s + 0}' \
        /proc/slabinfo 2>/dev/null || echo 0
}

# 1. RSS of the release build.
: > "$OUT/rss.txt"
for thp in 1 0; do
    rm -rf "$WORK/data"
    config "$WORK/data" > "$WORK/mqgate.toml"
    MIMALLOC_ALLOW_THP=$thp "$RELEASE" serve --config "$WORK/mqgate.toml" \
        > "$WORK/server.out" 2> "$WORK/server.err" &
    SERVER_PID=$!
    addr=$(mqtt_addr "$WORK/server.out")
    sleep 1
    before=$(rss_kib "$SERVER_PID")
    tcp_before=$(tcp_mem)
    slabs_before=$(socket_slabs)
    status_before=$(status "$SERVER_PID")
    connect_clients "$addr" "$DEVICES"
    sleep 2
    after=$(rss_kib "$SERVER_PID")
    slabs_after=$(socket_slabs)
    {
        echo "release build (mimalloc), MIMALLOC_ALLOW_THP=$thp, $DEVICES idle devices"
        echo "  before: $status_before"
        echo "  after:  $(status "$SERVER_PID")fds $(ls "/proc/$SERVER_PID/fd" | wc -l)"
        echo "  AnonHugePages after: $(awk '/^AnonHugePages:/ {print $2}' "/proc/$SERVER_PID/smaps_rollup") kB"
        echo "  kernel TCP buffer memory (sockstat, pages): $tcp_before -> $(tcp_mem)"
        awk -v b="$slabs_before" -v a="$slabs_after" -v n="$DEVICES" \
            'BEGIN {printf "  kernel socket objects (slabinfo TCP, sock_inode_cache, filp, dentry, eventpoll): %.0f B per device (4 sockets: 3 in mqgate, 1 in the client)\n", (a - b) / n}'

        awk -v b="$before" -v a="$after" -v n="$DEVICES" \
            'BEGIN {printf "  RSS %d -> %d KiB: %.1f KiB per device\n", b, a, (a - b) / n}'
    } | tee -a "$OUT/rss.txt" >&2
    stop_clients
    kill -9 "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
done

# 2. heaptrack, with no device and with DEVICES.
for run in base loaded; do
    count=0
    [ "$run" = loaded ] && count=$DEVICES
    rm -rf "$WORK/data" "$OUT/$run".raw.zst
    config "$WORK/data" > "$WORK/mqgate.toml"
    heaptrack -r -o "$OUT/$run" "$PROFILING" serve --config "$WORK/mqgate.toml" \
        > "$WORK/server.out" 2> "$WORK/server.err" &
    heaptrack_pid=$!
    addr=$(mqtt_addr "$WORK/server.out")
    SERVER_PID=
    for child in $(cat /proc/"$heaptrack_pid"/task/*/children); do
        [ "$(readlink "/proc/$child/exe")" = "$(readlink -f "$PROFILING")" ] && SERVER_PID=$child
    done
    [ -n "$SERVER_PID" ] || { echo "mqgate under heaptrack not found" >&2; exit 1; }
    sleep 1
    before=$(rss_kib "$SERVER_PID")
    connect_clients "$addr" "$count"
    sleep 3
    after=$(rss_kib "$SERVER_PID")
    python3 "$ROOT/bench/memory_breakdown.py" snapshot "$SERVER_PID" "$OUT/$run.pages"
    echo "heaptrack run '$run' (glibc malloc), $count devices: RSS $before -> $after KiB" | tee -a "$OUT/rss.txt" >&2
    kill -9 "$SERVER_PID"
    SERVER_PID=
    wait "$heaptrack_pid" 2>/dev/null || true
    stop_clients
    zstd -dc "$OUT/$run.raw.zst" | /usr/lib/heaptrack/libexec/heaptrack_interpret | zstd -q -c > "$OUT/$run.zst"
done

# 3. The futures' sizes (optional: needs a nightly toolchain).
if [ "${TYPE_SIZES:-0}" = 1 ]; then
    echo "== -Zprint-type-sizes (nightly)" >&2
    # (mqgate's own artifacts cleaned first, so that rustc runs and prints.)
    CARGO_TARGET_DIR=$TARGET/nightly cargo +nightly clean --release -p mqgate >&2
    CARGO_TARGET_DIR=$TARGET/nightly cargo +nightly rustc --release --lib -- -Zprint-type-sizes \
        > "$WORK/type-sizes.txt"
    # Every future of the MQTT side over 512 bytes, largest first.
    grep -E '^print-type-size type: `\{async (fn body of|block@)' "$WORK/type-sizes.txt" \
        | grep -E 'broker|rumqttd' \
        | sed -E 's/^print-type-size type: `(.*)`: ([0-9]+) bytes.*/\2 \1/' \
        | awk '$1 >= 512' | sort -rn | uniq > "$OUT/futures.txt" || true
fi

python3 "$ROOT/bench/memory_breakdown.py" report "$PROFILING" \
    "$OUT/base.raw.zst" "$OUT/base.pages" "$OUT/loaded.raw.zst" "$OUT/loaded.pages" "$DEVICES" \
    > "$OUT/report.md"
{
    echo
    echo "## RSS"
    echo
    sed 's/^/    /' "$OUT/rss.txt"
    echo
    echo "## Sizes"
    echo
    sed 's/^/    /' "$OUT/sizes.txt"
    if [ -s "$OUT/futures.txt" ]; then
        echo
        echo "## Futures of the MQTT side over 512 bytes (-Zprint-type-sizes)"
        echo
        sed 's/^/    /' "$OUT/futures.txt"
    fi
} >> "$OUT/report.md"
echo "== $OUT/report.md" >&2
cat "$OUT/report.md"
