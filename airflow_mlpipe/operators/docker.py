"""The Docker target: the step in a container on a Docker Engine.

Secure by default: code and inputs mounted read-only, no network, a non-root
user, no Docker socket. Containers carry labels naming the pipeline, DAG, run,
task and try, so an attempt removes what an earlier, killed attempt left behind.
"""

from __future__ import annotations

import collections
import os
import socket
import threading
import uuid
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_mlpipe.config import docker_env_passthrough, docker_user, passthrough_env
from airflow_mlpipe.exceptions import StepFailed, StepTimeout
from airflow_mlpipe.hooks.docker import DockerEngine, ImageUnavailable
from airflow_mlpipe.operators.base import BaseStepOperator, Invocation
from airflow_mlpipe.runtime import image_identity
from airflow_mlpipe.spec import DockerTarget

if TYPE_CHECKING:
    from docker.models.containers import Container

CODE = "/mlpipe/code"
INPUTS = "/mlpipe/inputs"
OUTPUTS = "/mlpipe/outputs"
META = "/mlpipe/meta"
LOG_TAIL = 30


class DockerStepOperator(BaseStepOperator):
    """Runs the step's argv in its image (resolved to an image ID, which is what runs)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._container: Container | None = None
        self._image_id: str | None = None

    @property
    def target(self) -> DockerTarget:
        target = self.step.target
        assert isinstance(target, DockerTarget)
        return target

    @cached_property
    def engine(self) -> DockerEngine:  # one client per task attempt
        return DockerEngine(self.target.docker_url, self.target.docker_conn_id)

    def environment_identity(self) -> str:
        try:
            image = self.engine.resolve_image(self.target.image, self.target.pull)
        except ImageUnavailable as exc:
            if exc.retryable:
                raise
            raise AirflowFailException(f"Step `{self.step_name}`: {exc}") from exc
        self._image_id = image.id
        return image_identity(image.id)

    def visible_paths(self, inv: Invocation) -> tuple[dict[str, str], dict[str, str], str]:
        return (
            {name: f"{INPUTS}/{name}" for name in inv.inputs},
            {name: f"{OUTPUTS}/{name}" for name in inv.outputs},
            f"{META}/{inv.metrics_file.name}",
        )

    # -- running ------------------------------------------------------------------
    def run_process(self, inv: Invocation, context: Any) -> None:
        from docker.types import DeviceRequest, Mount

        self._remove_orphans(inv.labels)
        target = self.target
        user = self._container_user()
        writable = [*inv.outputs.values(), inv.metrics_file.parent]
        self._grant(inv, user, writable)

        mounts = [Mount(CODE, str(inv.code_dir), type="bind", read_only=True)]
        mounts += [Mount(f"{INPUTS}/{k}", str(v), type="bind", read_only=True) for k, v in inv.inputs.items()]
        mounts += [Mount(f"{OUTPUTS}/{k}", str(v), type="bind", read_only=False) for k, v in inv.outputs.items()]
        mounts.append(Mount(META, str(inv.metrics_file.parent), type="bind", read_only=False))
        options: dict[str, Any] = {}
        if target.network in ("none", "host"):
            options["network_mode"] = target.network
        else:
            options["network"] = target.network
        if target.memory:
            options["mem_limit"] = target.memory
            options["memswap_limit"] = target.memory  # no swap beyond the limit: OOM is OOM
        if target.cpus:
            options["nano_cpus"] = int(target.cpus * 1e9)
        if target.shm_size:
            options["shm_size"] = target.shm_size
        if target.gpus not in (None, 0, ()):
            ids = list(target.gpus) if isinstance(target.gpus, tuple) else None
            count = target.gpus if isinstance(target.gpus, int) else 0
            options["device_requests"] = [DeviceRequest(count=count, device_ids=ids, capabilities=[["gpu"]])]

        # Any uid needs a writable HOME; /tmp is the container's own, not the worker's.
        env = {**passthrough_env(docker_env_passthrough()), "HOME": "/tmp", "PYTHONUNBUFFERED": "1", **inv.env}  # noqa: S108
        container = self.engine.client.containers.create(
            image=self._image_id or target.image,
            command=inv.argv,
            environment=env,
            user=user,
            working_dir=CODE,
            mounts=mounts,
            # Which worker process started it: what to look for when a container outlives its task.
            labels={**inv.labels, "mlpipe.managed": "true", "mlpipe.worker": f"{socket.gethostname()}:{os.getpid()}"},
            name=f"mlpipe-{self.step_name}-{uuid.uuid4().hex[:10]}",
            detach=True,
            **options,
        )
        self._container = container
        self.log.info(
            "Container %s (image %s, user %s, network %s)", container.name, target.image, user, target.network
        )
        tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
        try:
            container.start()
            reader = threading.Thread(target=self._stream, args=(container.id, tail), daemon=True)
            reader.start()
            code = self._wait(container, inv.timeout, tail)
            reader.join(timeout=30)
            container.reload()
            state = container.attrs.get("State", {})
            if state.get("OOMKilled"):
                raise StepFailed(
                    self.step_name,
                    f"the container was killed for running out of memory (OOM): it exceeded its memory limit "
                    f"`{target.memory or 'none set'}` (exit code {code}); raise `memory` in the step's target",
                    tail,
                )
            if code != 0:
                raise StepFailed(self.step_name, f"exit code {code}", tail)
        finally:
            self._discard(container)
            try:
                self._restore_ownership(user, writable)
            except Exception as exc:
                # Never hide the step's own error; without one, committing will report the files.
                self.log.error("Could not give the outputs back to the worker's user: %s", exc)

    def _wait(self, container: Container, timeout: float | None, tail: collections.deque[str]) -> int:
        import docker
        import requests

        try:
            result = container.wait(timeout=timeout)
        except requests.exceptions.RequestException as exc:
            # A read timeout surfaces as ReadTimeout or ConnectionError depending on the
            # requests version: ask the daemon whether the container is still running.
            try:
                container.reload()
                running = container.status == "running"
            except (docker.errors.DockerException, requests.exceptions.RequestException):
                raise StepFailed(self.step_name, f"lost the connection to the Docker daemon: {exc}", tail) from exc
            if timeout is None or not running:
                raise StepFailed(self.step_name, f"waiting for the container failed: {exc}", tail) from exc
            self._discard(container)
            raise StepTimeout(
                self.step_name,
                f"timed out after {timeout:.0f}s (`timeout` in the spec); container killed and removed",
                tail,
            ) from None
        return int(result.get("StatusCode", -1))

    def _stream(self, container_id: str, tail: collections.deque[str]) -> None:
        """Follow the log line by line; a separate client with no read timeout, so a
        step that is quiet for a long time does not break the stream."""
        import docker

        client = self.engine.streaming_client()
        try:
            pending = b""
            for chunk in client.api.logs(container_id, stream=True, follow=True, stdout=True, stderr=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    self._log_line(raw, tail)
            if pending:
                self._log_line(pending, tail)
        except docker.errors.DockerException as exc:
            self.log.warning("Log stream of step `%s` ended early: %s", self.step_name, exc)
        finally:
            client.close()

    def _log_line(self, raw: bytes, tail: collections.deque[str]) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        tail.append(line)
        self.log.info("[%s] %s", self.step_name, line)

    def _discard(self, container: Container) -> None:
        import docker

        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            self.log.warning("Could not remove container %s: %s", container.name, exc)
        self._container = None

    def _remove_orphans(self, labels: dict[str, str]) -> None:
        """Containers of earlier attempts of this task instance (a SIGKILLed worker never runs on_kill)."""
        same_ti = {k: labels[k] for k in ("airflow.dag_id", "airflow.run_id", "airflow.task_id")}
        for old in self.engine.containers_labelled(same_ti):
            self.log.warning(
                "Removing container %s left by try %s of this task", old.name, old.labels.get("airflow.try_number")
            )
            self._discard(old)

    # -- users and file ownership ---------------------------------------------------
    def _container_user(self) -> str:
        """Never root unless asked: the worker's own uid:gid, or a configured one for a root worker."""
        user = self.target.user
        if user == "root":
            return "0:0"
        if user:
            uid, _, gid = user.partition(":")
            return f"{uid}:{gid or uid}"  # Docker would give a bare uid the root group
        if os.geteuid() != 0:
            return f"{os.geteuid()}:{os.getegid()}"
        return docker_user()

    def _grant(self, inv: Invocation, user: str, writable: list[Path]) -> None:
        """Let the container user read the code copy and write its output and metrics dirs."""
        for path in (inv.workdir, inv.code_dir):
            path.chmod(0o755)
        for dirpath, dirnames, filenames in os.walk(inv.code_dir):
            for name in dirnames:
                (Path(dirpath) / name).chmod(0o755)
            for name in filenames:
                file = Path(dirpath) / name
                if not file.is_symlink():
                    file.chmod(file.stat().st_mode | 0o444)
        uid, gid = _ids(user)
        for path in writable:
            if os.geteuid() == 0:
                os.chown(path, uid, gid)
            elif uid != os.geteuid():
                path.chmod(0o777)  # a foreign uid without root: only permissions can let it write

    def _restore_ownership(self, user: str, writable: list[Path]) -> None:
        """Outputs end up owned by the worker's user, whoever the container ran as."""
        uid, _ = _ids(user)
        me, my_group = os.geteuid(), os.getegid()
        if uid == me:
            return
        if me == 0:
            for root in writable:
                for dirpath, dirnames, filenames in os.walk(root):
                    for name in [*dirnames, *filenames]:
                        os.lchown(Path(dirpath) / name, me, my_group)
                os.lchown(root, me, my_group)
            return
        # A non-root worker cannot chown: a short root container does it for us.
        from docker.types import Mount

        mounts = [Mount(f"/restore/{i}", str(p), type="bind") for i, p in enumerate(writable)]
        self.engine.client.containers.run(
            self._image_id or self.target.image,
            ["chown", "-R", f"{me}:{my_group}", *[m["Target"] for m in mounts]],
            user="0:0",
            network_mode="none",
            mounts=mounts,
            labels={"mlpipe.managed": "true"},
            remove=True,
        )

    def on_kill(self) -> None:
        if self._container is not None:
            self.log.info("Task killed: removing container %s", self._container.name)
            self._discard(self._container)


def _ids(user: str) -> tuple[int, int]:
    """`uid:gid` (validated by the spec and the config) as numbers."""
    uid, _, gid = user.partition(":")
    return int(uid), int(gid)
