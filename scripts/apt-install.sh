#!/usr/bin/env bash
# Install Debian packages the tests need, when their commands are missing (root on Debian).
# Usage: scripts/apt-install.sh COMMAND=PACKAGE ...   e.g. htpasswd=apache2-utils
set -euo pipefail
missing=()
for pair in "$@"; do
  command -v "${pair%%=*}" >/dev/null 2>&1 || missing+=("${pair#*=}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "apt-install: missing ${missing[*]}; install them (needs root on Debian)" >&2
  exit 1
fi
echo "apt-install: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
