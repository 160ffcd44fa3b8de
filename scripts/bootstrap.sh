#!/usr/bin/env bash
# Create the project's virtual environment on a fresh Debian machine with only Python 3.
# Usage: scripts/bootstrap.sh PYTHON VENV
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}

if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing python3-venv (Debian)"
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  else
    echo "bootstrap: $python cannot create virtual environments; install python3-venv" >&2
    exit 1
  fi
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
# Every version pinned by requirements/constraints.txt: a fresh install is reproducible.
# playwright (dev extra) drives Debian's chromium: it must never download a browser of its own.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$venv/bin/python" -m pip install -q -c requirements/constraints.txt -e '.[dev,examples]' 2>&1 \
  | grep -v '^WARNING: Location' || true
"$venv/bin/python" -c 'import airflow_mlpipe, airflow.sdk, sklearn' \
  || { echo "bootstrap: the environment is incomplete" >&2; exit 1; }
echo "bootstrap: environment ready in $venv"
