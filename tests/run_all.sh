#!/usr/bin/env bash
# Installs what the tests need and runs every test of mqgate:
#   - Debian packages: mosquitto-clients (a real MQTT client for the SDK suite),
#     wrk (the benchmark's second HTTP load generator, and tests/load_tools.rs),
#     redis-server (tests/cluster.rs: several nodes sharing one Redis)
#   - a Python venv in .venv with the official Alibaba SDKs and paho-mqtt, pinned
#   - npm packages (tests/sdk/node: @alicloud/pop-core, pinned by its lock file)
#   - cargo fmt --check, cargo clippy, cargo doc, cargo test (unit, SDK captures, end to
#     end, CLI, the broker API, the crash test, the benchmark on its tiny setting)
#   - the official-SDK suite (pytest) against a running mqgate
# Usage: bash tests/run_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

need_apt=()
command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
    step "apt-get install ${need_apt[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

step "python venv (.venv) with the official SDKs"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r tests/sdk/requirements.txt

step "npm packages (tests/sdk/node)"
(cd tests/sdk/node && npm ci --no-audit --no-fund --loglevel=error)

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --locked --all-targets -- -D warnings

step "cargo doc (broken links in the crate docs fail)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps -q

step "cargo test"
cargo test --locked --all-targets

# The README's run command resolves the mqgate binary (two binaries live
# in the package).
cargo run --locked -q -- --version
export MQGATE_BIN="$PWD/target/debug/mqgate"

step "official Python SDKs (pytest)"
.venv/bin/python -m pytest tests/sdk -q -p no:cacheprovider --ignore=tests/sdk/node

step "official Node SDK (node --test)"
node --test tests/sdk/node/
