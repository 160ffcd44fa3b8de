#!/usr/bin/env bash
# Run the example pipeline twice through Airflow: everything computed, then everything cached.
set -euo pipefail
bin=${VENV:-.venv}/bin
home=${DEMO_HOME:-var/demo}
rm -rf "$home"
mkdir -p "$home"
home=$(cd "$home" && pwd)
spec=dags_examples/wine/pipeline.yaml

echo "Steps run on the local target (subprocesses of the Airflow worker)."
echo
echo "== Run 1: a fresh store, every step computes"
"$bin/mlpipe" run "$spec" --home "$home" -p registry="$home/registry"
echo
echo "== Run 2: nothing changed, every step is a cache hit"
out=$("$bin/mlpipe" run "$spec" --home "$home" -p registry="$home/registry")
echo "$out"
steps=$(grep -c '^[a-z_]\+ \+\(hit\|miss\|-\) ' <<<"$out")
hits=$(grep -c '^[a-z_]\+ \+hit \+skipped ' <<<"$out")
if [ "$hits" != "$steps" ]; then
  echo "demo: expected every step of run 2 to be a cache hit ($hits/$steps)" >&2
  exit 1
fi
echo
echo "Model registry: $(ls "$home/registry" | tr '\n' ' ')  Store: $home/store"
