#!/usr/bin/env bash
# Runs the official DashScope Python SDK against a running wanx emulator.
#
#   wanx emulator --port 0          # prints its base URL, e.g. http://127.0.0.1:PORT/api/v1
#   tests/sdk/run.sh http://127.0.0.1:PORT/api/v1
#
# Creates a throwaway venv, installs `dashscope` from PyPI (set DASHSCOPE_SDK_VERSION to pin one,
# e.g. 2.0.2), and runs check_sdk.py. Exits non-zero, with the reason, if any step fails.
set -euo pipefail

if [[ $# -ne 1 || "$1" != http* ]]; then
    echo "usage: $0 BASE_URL   (the emulator's base URL, e.g. http://127.0.0.1:PORT/api/v1)" >&2
    exit 2
fi
base_url="${1%/}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"

venv="$(mktemp -d "${TMPDIR:-/tmp}/wanx-sdk-venv.XXXXXX")"
trap 'rm -rf "$venv"' EXIT

if ! "$python" -m venv "$venv" >"$venv.log" 2>&1; then
    echo "run.sh: could not create a venv with $python:" >&2
    cat "$venv.log" >&2; rm -f "$venv.log"
    exit 1
fi
rm -f "$venv.log"

spec="dashscope${DASHSCOPE_SDK_VERSION:+==$DASHSCOPE_SDK_VERSION}"
if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "$spec" >"$venv/pip.log" 2>&1; then
    echo "run.sh: \`pip install $spec\` failed (is PyPI reachable?):" >&2
    tail -n 20 "$venv/pip.log" >&2
    exit 1
fi

DASHSCOPE_HTTP_BASE_URL="$base_url" \
DASHSCOPE_API_KEY="${DASHSCOPE_API_KEY:-sk-fake}" \
    "$venv/bin/python" "$here/check_sdk.py"
