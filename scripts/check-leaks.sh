#!/usr/bin/env bash
# After the test session: no container, Airflow or Chromium process started by the tests may
# still run. Test processes are recognised by pytest's temporary folders in their command line
# (every stack, store and browser profile lives there) and containers by our label.
set -uo pipefail
leaks=0
containers=$(docker ps -aq --filter label=mlpipe.managed=true 2>/dev/null || true)
if [ -n "$containers" ]; then
  echo "leak: containers left by the tests:" >&2
  docker ps -a --filter label=mlpipe.managed=true >&2
  leaks=1
fi
for proc in /proc/[0-9]*; do
  pid=${proc#/proc/}
  [ "$pid" = "$$" ] && continue
  cmd=$(tr '\0' ' ' <"$proc/cmdline" 2>/dev/null) || continue
  case "$cmd" in
    *pytest-of-*|*mlpipe-tests-*|*mlpipe-worker-*)
      state=$(awk '{print $3}' "$proc/stat" 2>/dev/null)
      [ "$state" = Z ] && continue
      echo "leak: process $pid still running: ${cmd:0:200}" >&2
      leaks=1 ;;
  esac
done
[ $leaks = 0 ] && echo "leaks: none (no test container or process is left)"
exit $leaks
