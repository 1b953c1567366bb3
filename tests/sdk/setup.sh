#!/usr/bin/env bash
# Creates the Python virtualenv used by the SDK compatibility test (engine/tests/llm_sdk.rs):
# target/sdk-venv with the official `openai` and `anthropic` SDKs pinned in requirements.txt.
#
# Idempotent: when the venv exists and was built from the current requirements.txt (a stamp
# file holds its hash) and the SDKs import, it exits at once. Otherwise it (re)creates the venv
# and installs. Needs `python3` (>= 3.9) with the venv module, and access to PyPI.
#
# Usage: bash tests/sdk/setup.sh        (from anywhere; paths are relative to the repository)
#        PYTHON=/usr/bin/python3.11 bash tests/sdk/setup.sh   (choose the interpreter)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/sdk-venv"
req="$here/requirements.txt"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] &&
    "$venv/bin/python" -c 'import openai, anthropic' 2>/dev/null; then
    echo "sdk venv up to date: $venv"
    exit 0
fi

echo "creating sdk venv: $venv (with $("$python" --version 2>&1))"
rm -rf "$venv"
mkdir -p "$root/target"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
"$venv/bin/python" -c 'import openai, anthropic; print("openai", openai.__version__, "anthropic", anthropic.__version__)'
echo "$want" >"$stamp"
