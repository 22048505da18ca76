#!/usr/bin/env bash
# The benchmark harness (see BENCHMARKS.md): installs what it needs (ninja, valgrind; perf if missing
# is only reported), builds wanx in release mode, generates its own projects under a temp dir and prints,
# for each DESIGN.md target, wanx's figure, the peer's figure from the same run and their ratio.
#
#   bash bench/run.sh            # full run (~15-20 min on 2 cores)
#   bash bench/run.sh --quick    # smaller sizes (~4 min)
#
# Extra options are passed to bench/bench.py (`--help` lists them). Not part of `.ci/run`.
set -euo pipefail
cd "$(dirname "$0")/.."

install() {
    local pkg=$1
    if [ "$(id -u)" -ne 0 ]; then
        echo "bench: need \`$pkg\`; run as root or install it" >&2
        return 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >/dev/null 2>&1 || {
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >/dev/null
    }
}

command -v ninja >/dev/null || { echo "bench: installing ninja-build" >&2; install ninja-build; }
command -v python3 >/dev/null || { echo "bench: installing python3" >&2; install python3; }
[ -x /usr/bin/time ] || { echo "bench: installing time" >&2; install time; }
command -v valgrind >/dev/null || { echo "bench: installing valgrind" >&2; install valgrind; }

echo "bench: cargo build --release --locked" >&2
cargo build --release --locked --quiet

exec python3 bench/bench.py --bin "$PWD/target/release/wanx" "$@"
