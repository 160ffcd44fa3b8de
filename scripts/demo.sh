#!/usr/bin/env bash
# Run the example pipeline twice through Airflow: everything computed, then everything cached.
set -euo pipefail
bin=${VENV:-.venv}/bin
home=${DEMO_HOME:-var/demo}
rm -rf "$home"
mkdir -p "$home"
home=$(cd "$home" && pwd)
spec=dags_examples/wine/pipeline.yaml

target=()
if scripts/docker-engine.sh && scripts/build-images.sh; then
  echo "Steps run in Docker containers (image mlpipe-example:latest)."
else
  echo "No Docker Engine could be reached or started (see above): steps run on the local target"
  echo "(subprocesses of the Airflow worker) instead."
  target=(--local)
fi
echo
echo "== Run 1: a fresh store, every step computes"
"$bin/mlpipe" run "$spec" --home "$home" "${target[@]}"
echo
echo "== Run 2: nothing changed, every step is a cache hit"
out=$("$bin/mlpipe" run "$spec" --home "$home" "${target[@]}")
echo "$out"
steps=$(grep -c '^[a-z_]\+ \+\(hit\|miss\|-\) ' <<<"$out")
hits=$(grep -c '^[a-z_]\+ \+hit \+skipped ' <<<"$out")
if [ "$hits" != "$steps" ]; then
  echo "demo: expected every step of run 2 to be a cache hit ($hits/$steps)" >&2
  exit 1
fi
echo
release=$(find "$home/store/objects" -name card.json -path '*wine-classifier*' | head -n 1)
echo "Released model: ${release%/card.json}"
echo "Artifact store: $home/store"
