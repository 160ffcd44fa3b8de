"""The local target: the step as a subprocess on the worker."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from airflow_mlpipe.config import env_passthrough, passthrough_env
from airflow_mlpipe.exceptions import StepFailed, StepTimeout
from airflow_mlpipe.operators.base import BaseStepOperator, Invocation
from airflow_mlpipe.spec import LocalTarget

#: Lines of the step's log quoted in the failure message.
LOG_TAIL = 30
#: Seconds between SIGTERM and SIGKILL when a step is stopped.
KILL_GRACE = 10


class LocalStepOperator(BaseStepOperator):
    """Runs the command with argv (never a shell), in a copy of the step's code, with a
    clean environment: only the passthrough variables, the declared env and `MLPIPE_*`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._proc: subprocess.Popen[bytes] | None = None

    def run_process(self, inv: Invocation, context: Any) -> None:
        argv = list(inv.argv)
        target = self.step.target
        if argv[0] == "python":
            argv[0] = (target.python if isinstance(target, LocalTarget) else None) or sys.executable
        env = {**passthrough_env(env_passthrough()), **inv.env}
        env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            self._proc = proc = subprocess.Popen(
                argv,
                cwd=inv.code_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: we can stop all of it
            )
        except OSError as exc:
            raise StepFailed(self.step_name, f"could not start `{argv[0]}`: {exc.strerror}") from exc
        tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
        reader = threading.Thread(target=self._stream, args=(proc, tail), daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=inv.timeout)
        except subprocess.TimeoutExpired:
            self._stop(proc)
            reader.join(timeout=5)
            raise StepTimeout(
                self.step_name, f"timed out after {inv.timeout:.0f}s (`timeout` in the spec); process killed", tail
            ) from None
        except BaseException:
            # Airflow's own timeout or a signal interrupts the wait: never leave the step running.
            self._stop(proc)
            raise
        finally:
            self._proc = None
        reader.join()
        if code != 0:
            reason = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            raise StepFailed(self.step_name, reason, tail)

    def _stream(self, proc: subprocess.Popen[bytes], tail: collections.deque[str]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            tail.append(line)
            self.log.info("[%s] %s", self.step_name, line)

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def on_kill(self) -> None:
        if self._proc is not None:
            self._stop(self._proc)
