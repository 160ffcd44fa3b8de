#!/usr/bin/env bash
# Build the project's local Docker images, skipping each one that is already up to date.
#
#   mlpipe-base:bookworm     a Debian bookworm root file system made with debootstrap (no image
#                            registry is reachable here), with Python 3, NumPy, SciPy,
#                            scikit-learn and joblib from Debian; also tagged
#                            mlpipe-base:bookworm-<hash12>, the hash of its recipe below
#   mlpipe-example:latest    dags_examples/Dockerfile on that base (the example pipeline's steps)
#   mlpipe-test:latest       tests/docker/Dockerfile on that base (trivial test containers)
#
# Usage: scripts/build-images.sh [--force]    (from any folder; `make` runs it from the root)
#
# Needs a Docker Engine (scripts/docker-engine.sh starts one if none answers) and, to build the
# base, root and debootstrap (installed from Debian's packages when missing). The Debian mirror
# is the one this machine's apt uses; MLPIPE_DEBIAN_MIRROR overrides it.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
var="$root/var"
force=0
case "${1:-}" in
  "") ;;
  --force) force=1 ;;
  *) echo "usage: scripts/build-images.sh [--force]" >&2; exit 2 ;;
esac

say() { echo "build-images: $*"; }
die() { echo "build-images: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
t_start=$(now)

scripts/docker-engine.sh
mkdir -p "$var"

# ---------------------------------------------------------------------------------------------
# a. The base image. Its recipe: these settings and the functions named in recipe_hash below
#    (their code, not their comments). Any change to them changes the hash, and so the image is
#    built anew; an unchanged recipe is never rebuilt. The hash is in the image's label
#    org.mlpipe.recipe and in its tag mlpipe-base:bookworm-<hash12>.
BASE_REPO=mlpipe-base
BASE_SUITE=bookworm
BASE_VARIANT=minbase
# python-is-python3: the example steps' commands call `python`. libopenblas0-pthread: NumPy and
# SciPy use OpenBLAS (threaded, optimised) rather than the slow reference BLAS.
BASE_PACKAGES=python3,python-is-python3,python3-numpy,python3-scipy,python3-sklearn,python3-joblib,libopenblas0-pthread,ca-certificates
# Bookworm's python3-scipy depends on python3-pythran, a compiler SciPy does not use at run
# time, which pulls in g++, Boost, BLAS and Python headers: about 520 MB of the 860 MB. It is
# replaced by an empty placeholder package and every package that nothing else needs goes too,
# so the dpkg database stays consistent (`apt-get check` passes) in 1/3 of the size.
BASE_PLACEHOLDERS=python3-pythran

debian_mirror() { # the Debian archive this machine's apt uses (one-line and deb822 sources)
  local codename files
  # shellcheck disable=SC1091
  codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
  files=$(ls /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$files" ] || return 0
  # shellcheck disable=SC2086
  awk -v want="$BASE_SUITE" -v host="$codename" '
    function consider(types, uris, suites,   n, u, s, i, j) {
      if (types !~ /(^|[ \t])deb([ \t]|$)/) return
      n = split(uris, u, /[ \t]+/); split(suites, s, /[ \t]+/)
      for (i = 1; i <= n; i++) {
        if (u[i] !~ /^https?:\/\// || u[i] ~ /security/) continue
        for (j in s) {
          if (s[j] == want && best == "") best = u[i]
          if (s[j] == host && host != "" && other == "") other = u[i]
        }
      }
    }
    BEGIN { enabled = 1 }
    FNR == 1 { flush(); deb822 = (FILENAME ~ /\.sources$/) }
    function flush() {
      if (types != "" && enabled) consider(types, uris, suites)
      types = uris = suites = ""; enabled = 1
    }
    deb822 && /^[ \t]*$/ { flush(); next }
    deb822 && /^[ \t]*#/ { next }
    deb822 && tolower($1) == "types:"   { sub(/^[^:]*:[ \t]*/, ""); types = $0; next }
    deb822 && tolower($1) == "uris:"    { sub(/^[^:]*:[ \t]*/, ""); uris = $0; next }
    deb822 && tolower($1) == "suites:"  { sub(/^[^:]*:[ \t]*/, ""); suites = $0; next }
    deb822 && tolower($1) == "enabled:" { enabled = (tolower($2) != "no"); next }
    deb822 { next }
    /^[ \t]*deb[ \t]/ {
      line = $0; sub(/^[ \t]*deb[ \t]+/, "", line)
      if (line ~ /^\[/) sub(/^\[[^]]*\][ \t]*/, "", line)
      split(line, f, /[ \t]+/); consider("deb", f[1], f[2])
    }
    END { flush(); if (best != "") print best; else if (other != "") print other }
  ' $files
}

in_root() { # DIR COMMAND...: run a command inside the root file system
  local d=$1
  shift
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C DEBIAN_FRONTEND=noninteractive chroot "$d" "$@"
}

drop_build_tools() { # DIR: BASE_PLACEHOLDERS become empty packages; what nothing needs goes
  local d=$1 p v purge
  for p in ${BASE_PLACEHOLDERS//,/ }; do
    # shellcheck disable=SC2016 # dpkg-query's own ${fields}
    v=$(in_root "$d" dpkg-query -W -f '${Version}' "$p" 2>/dev/null) || continue
    mkdir -p "$d/tmp/$p/DEBIAN"
    printf '%s\n' "Package: $p" "Version: $v+mlpipe1" "Architecture: all" \
      "Maintainer: airflow-mlpipe <noreply@localhost>" "Priority: optional" \
      "Description: placeholder for $p (not needed at run time)" \
      " Built by airflow-mlpipe's scripts/build-images.sh for its base image." \
      >"$d/tmp/$p/DEBIAN/control"
    in_root "$d" dpkg-deb --root-owner-group --build "/tmp/$p" "/tmp/$p.deb" >/dev/null
    in_root "$d" dpkg -i "/tmp/$p.deb" >/dev/null
    rm -rf "$d/tmp/$p" "$d/tmp/$p.deb"
  done
  # Keep what the essential and required packages, apt and BASE_PACKAGES depend on (the first
  # installed choice of each alternative); purge the rest. dpkg refuses to purge a package that
  # a kept one still needs, so a mistake here fails the build rather than the image.
  # shellcheck disable=SC2016
  in_root "$d" dpkg-query -W -f '${Package}\t${Essential}\t${Priority}\t${Provides}\t${Pre-Depends}, ${Depends}\n' \
    >"$d/tmp/packages.tsv"
  cat >"$d/tmp/unneeded.py" <<'PY'
import re
import sys

roots = sys.argv[1].split(",") + ["apt"]
name = lambda s: re.sub(r"\s*\(.*\)|:\w+$", "", s.strip()).strip()  # noqa: E731
deps, providers = {}, {}
for line in open("/tmp/packages.tsv"):
    pkg, essential, priority, provides, depends = line.rstrip("\n").split("\t")
    deps[pkg] = [[name(a) for a in g.split("|")] for g in depends.split(",") if g.strip()]
    for v in filter(str.strip, provides.split(",")):
        providers.setdefault(name(v), []).append(pkg)
    if essential == "yes" or priority == "required":
        roots.append(pkg)
keep, todo = set(), [r for r in roots if r in deps]
while todo:
    pkg = todo.pop()
    if pkg not in keep:
        keep.add(pkg)
        for group in deps[pkg]:
            choices = [c for a in group for c in ([a] if a in deps else []) + providers.get(a, [])]
            if choices and not keep.intersection(choices):
                todo.append(choices[0])
print(" ".join(sorted(set(deps) - keep)))
PY
  purge=$(in_root "$d" python3 /tmp/unneeded.py "$BASE_PACKAGES")
  rm -f "$d/tmp/unneeded.py" "$d/tmp/packages.tsv"
  if [ -n "$purge" ]; then
    # shellcheck disable=SC2086
    in_root "$d" dpkg --purge $purge >/dev/null
  fi
  in_root "$d" dpkg --audit
  in_root "$d" apt-get check -qq
  echo "$purge" >"$var/base-purged.txt"
}

clean_rootfs() { # DIR: shrink the root file system; the image never runs apt with a network
  local d=$1
  rm -rf "$d"/var/cache/apt/archives/*.deb "$d"/var/cache/apt/archives/partial/* \
    "$d"/var/cache/apt/*.bin "$d"/var/lib/apt/lists/* "$d"/var/cache/debconf/*-old \
    "$d"/var/lib/dpkg/*-old "$d"/var/log/* "$d"/tmp/* "$d"/var/tmp/* \
    "$d"/usr/share/man/* "$d"/usr/share/info/* "$d"/usr/share/locale/* \
    "$d"/usr/share/lintian "$d"/usr/share/linda \
    "$d"/etc/resolv.conf "$d"/etc/hostname # the host's, copied by debootstrap; Docker sets both
  # Documentation goes, its copyright notices stay.
  find "$d"/usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
  find "$d"/usr/share/doc -mindepth 1 -type d -empty -delete
  # Packages installed later in derived images leave out the same files.
  mkdir -p "$d"/etc/dpkg/dpkg.cfg.d "$d"/etc/apt/apt.conf.d
  printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
    'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*' \
    'path-exclude=/usr/share/locale/*' >"$d"/etc/dpkg/dpkg.cfg.d/01-mlpipe-nodoc
  printf '%s\n' 'APT::Install-Recommends "false";' 'APT::Install-Suggests "false";' \
    'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };' \
    >"$d"/etc/apt/apt.conf.d/01-mlpipe-slim
}

import_rootfs() { # DIR NAME:TAG RECIPE_HASH
  tar -C "$1" --numeric-owner -c . | docker import \
    --change 'CMD ["/bin/bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL org.mlpipe.recipe=$3" \
    --change "LABEL org.opencontainers.image.title=$BASE_REPO" \
    --change "LABEL org.opencontainers.image.description=\"Debian $BASE_SUITE ($BASE_VARIANT) with $BASE_PACKAGES\"" \
    --message "debootstrap --variant=$BASE_VARIANT $BASE_SUITE" \
    - "$2" >/dev/null
}

smoke_test() { # IMAGE: Python, NumPy on OpenBLAS, SciPy and scikit-learn work, offline
  docker run --rm --network none "$1" python -c '
import numpy, scipy.linalg, sklearn, joblib
from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier
from threadpoolctl import threadpool_info
x, y = load_wine(return_X_y=True)
assert RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y).score(x, y) > 0.9
a = numpy.random.default_rng(0).random((50, 50))
assert numpy.allclose(scipy.linalg.inv(a) @ a, numpy.eye(50), atol=1e-6)
assert any(i["internal_api"] == "openblas" for i in threadpool_info()), threadpool_info()
'
}

recipe_hash=$(
  {
    printf '%s\n' "$BASE_REPO" "$BASE_SUITE" "$BASE_VARIANT" "$BASE_PACKAGES" "$BASE_PLACEHOLDERS"
    declare -f in_root drop_build_tools clean_rootfs import_rootfs smoke_test
  } | sha256sum | cut -c1-64
)
base_tag="$BASE_REPO:$BASE_SUITE"
base_hashed="$BASE_REPO:$BASE_SUITE-${recipe_hash:0:12}"
rootfs="$var/base-rootfs"

unmount_under() { # DIR: undo mounts a failed debootstrap may leave (proc, sys, dev/pts)
  local m
  findmnt -rn -o TARGET 2>/dev/null | awk -v d="$1/" 'index($0, d) == 1' | sort -r \
    | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
remove_rootfs() {
  [ -e "$rootfs" ] || return 0
  unmount_under "$rootfs"
  rm -rf --one-file-system "$rootfs"
}

image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null; }

build_base() {
  local t0 t mirror
  t0=$(now)
  if [ "$force" = 0 ] && [ -z "$(image_id "$base_hashed")" ] && [ "$(docker image inspect \
    --format '{{index .Config.Labels "org.mlpipe.recipe"}}' "$base_tag" 2>/dev/null)" = "$recipe_hash" ]; then
    docker tag "$base_tag" "$base_hashed" # the hash tag was removed, the image is the same
  fi
  if [ "$force" = 0 ] && [ -n "$(image_id "$base_hashed")" ]; then
    if [ "$(image_id "$base_tag")" != "$(image_id "$base_hashed")" ]; then
      docker tag "$base_hashed" "$base_tag"
    fi
    say "skipped $base_tag: up to date ($base_hashed) [$(since "$t0")]"
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "building $base_tag needs root (debootstrap)"
  if ! command -v debootstrap >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "debootstrap is missing and there is no apt-get to install it"
    say "installing debootstrap (Debian)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  mirror=${MLPIPE_DEBIAN_MIRROR:-$(debian_mirror)}
  mirror=${mirror:-http://deb.debian.org/debian}
  remove_rootfs
  trap remove_rootfs EXIT
  mkdir -p "$var/debootstrap-cache"
  say "debootstrap $BASE_SUITE ($BASE_VARIANT) from $mirror into $rootfs"
  t=$(now)
  if ! debootstrap --variant="$BASE_VARIANT" --include="$BASE_PACKAGES" \
    --cache-dir="$var/debootstrap-cache" "$BASE_SUITE" "$rootfs" "$mirror" \
    >"$var/debootstrap.log" 2>&1; then
    tail -n 20 "$var/debootstrap.log" >&2
    [ -f "$rootfs/debootstrap/debootstrap.log" ] && tail -n 20 "$rootfs/debootstrap/debootstrap.log" >&2
    die "debootstrap failed; see $var/debootstrap.log"
  fi
  say "debootstrap done [$(since "$t")], $(du -sh --one-file-system "$rootfs" | cut -f1)"
  t=$(now)
  drop_build_tools "$rootfs"
  clean_rootfs "$rootfs"
  say "purged $(wc -w <"$var/base-purged.txt") packages nothing needs (list in var/base-purged.txt)," \
    "cleaned caches and docs [$(since "$t")]"
  t=$(now)
  import_rootfs "$rootfs" "$base_hashed" "$recipe_hash"
  say "imported $(du -sh --one-file-system "$rootfs" | cut -f1) as $base_hashed [$(since "$t")]"
  remove_rootfs
  if ! smoke_test "$base_hashed"; then
    docker rmi "$base_hashed" >/dev/null 2>&1 || true
    die "the new base image fails its smoke test (above); $base_tag is unchanged"
  fi
  docker tag "$base_hashed" "$base_tag"
  trap - EXIT
  # Tags of older recipes go; an image still used by a derived image stays until that goes.
  docker image ls --format '{{.Repository}}:{{.Tag}}' "$BASE_REPO" \
    | grep -E "^$BASE_REPO:$BASE_SUITE-[0-9a-f]{12}\$" | grep -vxF "$base_hashed" \
    | while read -r old; do docker rmi "$old" >/dev/null 2>&1 || true; done || true
  say "built $base_tag = $base_hashed [$(since "$t0")]"
}

# ---------------------------------------------------------------------------------------------
# b, c. Images built with a Dockerfile on the base. Each carries the label org.mlpipe.build-key:
#    the hash of its build context's files, its build arguments and the base image's id. A
#    matching label means nothing changed and the build is skipped.
if docker buildx version >/dev/null 2>&1; then
  builder=buildkit
else
  builder=legacy # a CLI without the buildx plugin: BuildKit would refuse to start
  export DOCKER_BUILDKIT=0
fi

context_hash() { # DIR
  (cd "$1" && find . -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z \
    | xargs -0 -r sha256sum) | sha256sum | cut -c1-64
}

build_image() { # NAME CONTEXT [docker build args...]
  local name=$1 context=$2 t0 key have log
  shift 2
  t0=$(now)
  key=$({
    context_hash "$context"
    printf '%s\n' "$@" "$(image_id "$base_tag")"
  } | sha256sum | cut -c1-64)
  have=$(docker image inspect --format '{{index .Config.Labels "org.mlpipe.build-key"}}' "$name" 2>/dev/null || true)
  if [ "$force" = 0 ] && [ "$have" = "$key" ]; then
    say "skipped $name: up to date [$(since "$t0")]"
    return 0
  fi
  log="$var/build-${name%%:*}.log"
  if ! docker build "$@" --label "org.mlpipe.build-key=$key" -t "$name" "$context" >"$log" 2>&1; then
    if [ "$builder" = buildkit ]; then
      # BuildKit can fail where the classic builder works (e.g. its RUN sandbox without a
      # bridge network); try that once before giving up.
      say "BuildKit failed for $name; retrying with the classic builder (DOCKER_BUILDKIT=0)"
      DOCKER_BUILDKIT=0 docker build "$@" --label "org.mlpipe.build-key=$key" -t "$name" \
        "$context" >"$log" 2>&1 || { tail -n 30 "$log" >&2; die "docker build of $name failed; see $log"; }
    else
      tail -n 30 "$log" >&2
      die "docker build of $name failed; see $log"
    fi
  fi
  say "built $name from $context/Dockerfile ($builder builder) [$(since "$t0")]"
}

build_base
build_image mlpipe-example:latest dags_examples --build-arg "BASE=$base_tag"
build_image mlpipe-test:latest tests/docker --build-arg "BASE=$base_tag"

docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.ID}}\t{{.Size}}' \
  | grep -E '^mlpipe-(base|example|test):' | sed 's/^/  /' || true
say "done [$(since "$t_start")]"
