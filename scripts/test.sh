#!/usr/bin/env bash
# The whole suite: lint, types, tests. Prints the number of skipped tests at the end.
set -uo pipefail
bin=${VENV:-.venv}/bin
mkdir -p var
status=0

echo "== Docker Engine and test images"
# The Docker tests need both; under CI=true they fail (not skip) when either is missing.
if scripts/docker-engine.sh && scripts/build-images.sh; then
  :
else
  echo "test: no Docker Engine or images: the Docker tests will fail under CI=true, skip otherwise" >&2
fi

echo "== Debian tools for the tests (a private Docker registry with basic auth)"
scripts/apt-install.sh docker-registry=docker-registry htpasswd=apache2-utils \
  || echo "test: the registry tests will fail under CI=true, skip otherwise" >&2

echo "== Debian's Chromium for the browser test (driven by Playwright from PyPI; never a downloaded browser)"
scripts/apt-install.sh chromium=chromium \
  || echo "test: the browser test will fail under CI=true, skip otherwise" >&2

echo "== ruff"
"$bin/ruff" check . && "$bin/ruff" format --check . || status=1
echo "== mypy"
"$bin/mypy" || status=1
echo "== pytest"
"$bin/pytest" -ra --junitxml=var/junit.xml "$@" || status=1
echo "== leaks"
scripts/check-leaks.sh || status=1

"$bin/python" - <<'PY'
import xml.etree.ElementTree as ET
try:
    root = ET.parse("var/junit.xml").getroot()
except (OSError, ET.ParseError):
    print("skipped tests: unknown (no junit report)")
else:
    suites = [root] if root.tag == "testsuite" else list(root)
    total = sum(int(s.get("tests", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    print(f"skipped tests: {skipped} of {total}")
PY
exit $status
