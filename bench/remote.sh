#!/usr/bin/env bash
# Remote cache restore benchmark (BENCHMARKS.md): wanx restoring 1,000 images from an nginx WebDAV
# cache on loopback vs `curl` copying the same files in parallel. Not part of `.ci/run`.
#
#   bash bench/remote.sh [--images 1000] [--runs 3] [--parallel 16]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/sbin/nginx ]; then
    echo "bench: installing nginx" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >/dev/null 2>&1 || {
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >/dev/null
    }
fi
command -v curl >/dev/null || { echo "bench: curl is needed" >&2; exit 1; }
echo "bench: cargo build --release --locked" >&2
cargo build --release --locked --quiet
exec python3 bench/remote.py --bin "$PWD/target/release/wanx" "$@"
