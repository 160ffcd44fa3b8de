#!/usr/bin/env bash
# Make sure a Docker Engine answers `docker info`; start one on a Debian machine if none does.
#
# Usage: scripts/docker-engine.sh          ensure a daemon runs (install docker.io if needed)
#        scripts/docker-engine.sh --check  only report: exit 0 if reachable, 1 if not
#
# Idempotent. A daemon that already answers (DOCKER_HOST or /var/run/docker.sock) is used as
# it is. Otherwise, as root on Debian, `docker.io` is installed when `dockerd` is missing and
# dockerd is started in its own session, in the background, with the project's network rule:
#
#   dockerd --bridge=none --iptables=false --ip6tables=false
#
# No bridge means containers get no network unless they use the host's (network_mode="host"),
# and no traffic ever goes to a private-range address. The daemon keeps running after this
# script ends (tests and later commands use it): its pid is in var/dockerd.pid, its log in
# var/dockerd.log. This script never stops a daemon, and never kills anything by name.
#
# Storage driver: overlay2 is tried first (fast, shares layers). Where the kernel or the file
# system under /var/lib/docker cannot do overlay mounts (no overlay module, /var/lib/docker on
# overlayfs itself as in a container, some tmpfs or FUSE roots), dockerd refuses to start with
# "driver not supported"; then vfs is used: it copies every layer in full (slower builds, more
# disk) but works on any file system. On this project's Debian VMs (ext4 root, overlay built
# into the kernel) overlay2 works. MLPIPE_DOCKER_STORAGE_DRIVER=vfs|overlay2 forces one.
#
# Checked on those VMs (Debian 12, docker.io 20.10, cgroup v1): dockerd uses the cgroupfs cgroup
# driver, and memory limits work (`docker run --memory 64m` + a 512 MB allocation is OOM-killed:
# exit 137, State.OOMKilled true), so no cgroup option is passed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
var="$root/var"
log="$var/dockerd.log"
pidfile="$var/dockerd.pid"
wait_s=${MLPIPE_DOCKERD_WAIT:-60}

say() { echo "docker-engine: $*"; }
die() { echo "docker-engine: $*" >&2; exit 1; }

server_version() {
  command -v docker >/dev/null 2>&1 || return 1
  timeout 10 docker info --format '{{.ServerVersion}}' 2>/dev/null | grep -v '^$'
}

report_reachable() {
  local version driver
  version=$(server_version) || return 1
  driver=$(timeout 10 docker info --format '{{.Driver}}' 2>/dev/null || true)
  say "Docker Engine $version reachable at ${DOCKER_HOST:-unix:///var/run/docker.sock}" \
    "(storage driver ${driver:-unknown})"
}

if [ "${1:-}" = "--check" ]; then
  report_reachable && exit 0
  say "no Docker Engine reachable at ${DOCKER_HOST:-unix:///var/run/docker.sock}" >&2
  exit 1
elif [ $# -gt 0 ]; then
  die "unknown argument \`$1\`; usage: scripts/docker-engine.sh [--check]"
fi

report_reachable && exit 0

# Nothing answers. Starting a local daemon only helps when the client talks to the local socket.
case "${DOCKER_HOST:-unix:///var/run/docker.sock}" in
  unix:///var/run/docker.sock | unix:///run/docker.sock) ;;
  *) die "DOCKER_HOST=$DOCKER_HOST does not answer \`docker info\`; start that engine, or unset DOCKER_HOST to let this script start a local one" ;;
esac
if [ "$(id -u)" != 0 ] && [ -S /var/run/docker.sock ] && [ ! -w /var/run/docker.sock ]; then
  die "/var/run/docker.sock exists but $(id -un) may not use it: add the user to the \`docker\` group, or run as root"
fi
[ "$(id -u)" = 0 ] || die "no Docker Engine is running and starting one needs root (run this script as root, or start dockerd yourself)"
if [ ! -r /etc/debian_version ] || ! command -v apt-get >/dev/null 2>&1; then
  die "no Docker Engine is running and this is not a Debian machine with apt-get: install and start Docker yourself"
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  say "installing docker.io (Debian)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null || die "apt-get install docker.io failed"
  command -v dockerd >/dev/null 2>&1 || die "docker.io is installed but \`dockerd\` is not on PATH"
fi

mkdir -p "$var"
# One starter at a time (e.g. parallel make jobs); the others wait, then find it running.
exec 9>"$var/docker-engine.lock"
if ! flock -n 9; then
  say "another scripts/docker-engine.sh is starting dockerd; waiting for it"
  flock -w $((wait_s + 30)) 9 || die "another scripts/docker-engine.sh holds $var/docker-engine.lock"
fi
report_reachable && exit 0

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
last_run_log() { # the log of the latest start only
  awk '/^=== / { buf = "" } { buf = buf $0 "\n" } END { printf "%s", buf }' "$log" 2>/dev/null
}
is_dockerd() { [ "$(cat "/proc/$1/comm" 2>/dev/null)" = dockerd ]; }

wait_for_engine() { # PID: wait until `docker info` answers, or the daemon dies, or time runs out
  local pid=$1 deadline=$((SECONDS + wait_s))
  while [ $SECONDS -lt $deadline ]; do
    server_version >/dev/null && return 0
    alive "$pid" || return 1
    sleep 0.5
  done
  return 1
}

# A daemon we started earlier may still be coming up: wait for it instead of starting another.
if [ -s "$pidfile" ]; then
  old=$(cat "$pidfile")
  if alive "$old" && is_dockerd "$old"; then
    say "dockerd (pid $old, started earlier) does not answer yet; waiting up to ${wait_s}s"
    wait_for_engine "$old" && { report_reachable; exit 0; }
    tail -n 30 "$log" >&2 || true
    die "dockerd (pid $old) runs but does not answer \`docker info\`; see $log (this script does not stop it)"
  fi
fi
# A daemon someone else started (its own pid file) that does not answer: leave it alone.
for other in /var/run/docker.pid /run/docker.pid; do
  if [ -s "$other" ] && alive "$(cat "$other")" && is_dockerd "$(cat "$other")"; then
    die "a dockerd (pid $(cat "$other"), $other) runs but does not answer \`docker info\`; fix or stop it yourself"
  fi
done

start_dockerd() { # DRIVER: start dockerd in its own session; sets $pid
  {
    echo "=== $(date -Is) starting dockerd --storage-driver=$1"
  } >>"$log"
  setsid nohup dockerd --bridge=none --iptables=false --ip6tables=false \
    --storage-driver="$1" </dev/null >>"$log" 2>&1 9>&- & # 9>&-: the lock is not the daemon's
  pid=$!
  echo "$pid" >"$pidfile"
}

drivers=${MLPIPE_DOCKER_STORAGE_DRIVER:-overlay2 vfs}
for driver in $drivers; do
  start_dockerd "$driver"
  say "started dockerd (pid $pid, storage driver $driver, log $log); waiting up to ${wait_s}s"
  if wait_for_engine "$pid"; then
    report_reachable
    exit 0
  fi
  if alive "$pid"; then # up but not answering: do not pile up daemons
    last_run_log | tail -n 30 >&2
    die "dockerd (pid $pid) did not answer \`docker info\` within ${wait_s}s; see $log"
  fi
  rm -f "$pidfile"
  if ! last_run_log | grep -v '^=== ' | grep -qiE 'driver not supported|graphdriver|overlay'; then
    break # it died for a reason another storage driver will not fix
  fi
  say "dockerd could not use storage driver $driver"
done
last_run_log | tail -n 30 >&2
die "could not start dockerd; the log's tail is above ($log)"
