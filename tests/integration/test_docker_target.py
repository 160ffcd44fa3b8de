"""The Docker target against a real Docker Engine, through Airflow (`dag.test()`).

Needs the engine and the local images (`scripts/docker-engine.sh`,
`scripts/build-images.sh`; `make test` runs both). Under CI=true a missing
engine or image fails these tests instead of skipping them.
"""

from __future__ import annotations

import grp
import io
import json
import multiprocessing
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_mlpipe.runner import RunReport, run_pipeline
from airflow_mlpipe.store import LocalStore
from tests.conftest import EXAMPLES
from tests.integration.conftest import TEST_IMAGE
from tests.integration.helpers import manifests, results, write_pipeline

pytestmark = pytest.mark.docker


class ContainerCount:
    """Containers of one pipeline created on the engine since start() (by label, so other
    work on the same engine does not count)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.since = 0
        self.pipeline = ""

    def start(self, pipeline: str) -> None:
        time.sleep(1.05)  # events are filtered by whole seconds
        self.since = int(time.time())
        self.pipeline = pipeline

    def created(self) -> int:
        until = int(time.time()) + 1
        events = self.client.events(
            since=self.since,
            until=until,
            decode=True,
            filters={"type": "container", "event": "create", "label": [f"mlpipe.pipeline={self.pipeline}"]},
        )
        return sum(1 for _ in events)


@pytest.fixture
def containers(docker_client: Any) -> ContainerCount:
    return ContainerCount(docker_client)


def run(spec: Path, store: Path, home: Path, **conf: Any) -> RunReport:
    report = run_pipeline(spec, conf=conf, home=home, store=str(store))
    print(report.table())
    return report


TWO_STEPS = """
    name: docker_two
    source: steps
    defaults:
      target: {kind: docker, image: "mlpipe-test:latest", pull: never}
    steps:
      who:
        command: [python3, who.py, "{{ outputs.out }}"]
        outputs: [out]
      read:
        inputs: {who: who.out}
        command: [python3, read.py, "{{ inputs.who }}", "{{ outputs.out }}"]
        outputs: [out]
"""
WHO = """
    import json, os, sys
    facts = {"uid": os.getuid(), "gid": os.getgid(), "net": sorted(os.listdir("/sys/class/net")),
             "socket": os.path.exists("/var/run/docker.sock")}
    for path in ("/mlpipe/code/who.py",):
        try:
            open(path, "a").close()
            facts["code_writable"] = True
        except OSError:
            facts["code_writable"] = False
    json.dump(facts, open(os.path.join(sys.argv[1], "facts.json"), "w"))
    json.dump({"uid": os.getuid()}, open(os.environ["MLPIPE_METRICS_FILE"], "w"))
    print("facts", facts)
"""
READ = """
    import os, shutil, sys
    try:
        open(os.path.join(sys.argv[1], "new.txt"), "w").close()
        status = "writable"
    except OSError:
        status = "read-only"
    open(os.path.join(sys.argv[2], "input.txt"), "w").write(status)
    shutil.copy(os.path.join(sys.argv[1], "facts.json"), sys.argv[2])
"""


def test_steps_run_in_isolated_containers_and_hits_create_none(
    docker_client: Any, containers: ContainerCount, tmp_path: Path, store: Path, airflow_home: Path
) -> None:
    spec = write_pipeline(tmp_path, TWO_STEPS, {"who.py": WHO, "read.py": READ})
    containers.start("docker_two")
    first = run(spec, store, airflow_home)
    assert first.ok and results(first) == {"who": "miss", "read": "miss"}
    assert containers.created() == 2

    manifest = LocalStore(store).get(first.rows[0].key or "")
    assert manifest is not None
    out = Path(manifest.outputs["out"].uri)
    facts = json.loads((out / "facts.json").read_text())
    # Not root, no network but loopback, no Docker socket, read-only code.
    assert facts["uid"] != 0 and facts["gid"] != 0
    assert facts["net"] == ["lo"]
    assert facts["socket"] is False
    assert facts["code_writable"] is False
    # Outputs belong to the worker's user, whoever the container ran as.
    assert (out / "facts.json").stat().st_uid == os.geteuid()
    assert first.rows[0].metrics == {"uid": facts["uid"]}
    read = LocalStore(store).get(first.rows[1].key or "")
    assert read is not None
    assert (Path(read.outputs["out"].uri) / "input.txt").read_text() == "read-only"

    containers.start("docker_two")
    second = run(spec, store, airflow_home)
    assert set(results(second).values()) == {"hit"}
    assert containers.created() == 0
    assert not docker_client.containers.list(all=True, filters={"label": "mlpipe.pipeline=docker_two"})


def test_example_pipeline_runs_in_containers_then_hits_with_no_container(
    docker_client: Any, containers: ContainerCount, tmp_path: Path, store: Path, airflow_home: Path
) -> None:
    spec = EXAMPLES / "wine" / "pipeline.yaml"
    containers.start("wine_classifier")
    first = run(spec, store, airflow_home)
    assert first.ok and set(results(first).values()) == {"miss"}
    assert containers.created() == 4
    assert next(r for r in first.rows if r.step == "evaluate").metrics["accuracy"] >= 0.8

    containers.start("wine_classifier")
    second = run(spec, store, airflow_home)
    assert set(results(second).values()) == {"hit"}
    assert {r.state for r in second.rows} == {"skipped"}
    assert containers.created() == 0


REBUILT = """
    name: docker_rebuilt
    source: steps
    steps:
      use:
        target: {kind: docker, image: "mlpipe-rebuilt:latest", pull: never}
        command: [python3, use.py, "{{ outputs.out }}"]
        outputs: [out]
      other:
        target: {kind: docker, image: "mlpipe-test:latest", pull: never}
        command: [python3, use.py, "{{ outputs.out }}"]
        outputs: [out]
"""
USE = """
    import os, sys
    open(os.path.join(sys.argv[1], "flavour.txt"), "w").write(os.environ.get("FLAVOUR", "-"))
"""


def build_image(client: Any, tag: str, flavour: str) -> str:
    dockerfile = f"FROM {TEST_IMAGE}\nENV FLAVOUR={flavour}\n".encode()
    image, _ = client.images.build(
        fileobj=io.BytesIO(dockerfile), tag=tag, network_mode="none", rm=True, labels={"mlpipe.test": "rebuilt"}
    )
    return str(image.id)


def test_rebuilding_an_image_reruns_the_steps_that_use_it(
    docker_client: Any, tmp_path: Path, store: Path, airflow_home: Path
) -> None:
    spec = write_pipeline(tmp_path, REBUILT, {"use.py": USE})
    try:
        build_image(docker_client, "mlpipe-rebuilt:latest", "vanilla")
        assert results(run(spec, store, airflow_home)) == {"use": "miss", "other": "miss"}
        build_image(docker_client, "mlpipe-rebuilt:latest", "vanilla")  # same recipe: same image ID
        assert results(run(spec, store, airflow_home)) == {"use": "hit", "other": "hit"}
        build_image(docker_client, "mlpipe-rebuilt:latest", "chocolate")  # same tag, new content
        assert results(run(spec, store, airflow_home)) == {"use": "miss", "other": "hit"}
    finally:
        docker_client.images.remove("mlpipe-rebuilt:latest", force=True)
        docker_client.images.prune(filters={"label": "mlpipe.test=rebuilt"})  # the untagged earlier builds


FAILING = """
    name: docker_failing
    source: steps
    defaults:
      target: {kind: docker, image: "mlpipe-test:latest", pull: never, memory: 64m}
    steps:
      step:
        command: [python3, step.py, "{{ params.mode }}"]
        outputs: [out]
    params:
      mode: {type: string, default: exit3, enum: [exit3, oom, sleep]}
"""
STEP = """
    import sys, time
    mode = sys.argv[1]
    for i in range(50):
        print(f"line {i}")
    if mode == "exit3":
        print("giving up: the input has no rows")
        sys.exit(3)
    if mode == "oom":
        hog = [bytearray(16 * 1024 * 1024) for _ in range(64)]
    time.sleep(120)
"""


def test_exit_code_and_oom_are_reported_clearly(
    docker_client: Any, tmp_path: Path, store: Path, airflow_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    spec = write_pipeline(tmp_path, FAILING, {"step.py": STEP})
    report = run(spec, store, airflow_home, mode="exit3")
    logs = "".join(capfd.readouterr())
    assert not report.ok
    assert "Step `step` failed: exit code 3" in logs
    assert "giving up: the input has no rows" in logs

    report = run(spec, store, airflow_home, mode="oom")
    logs = "".join(capfd.readouterr())
    assert not report.ok
    assert "out of memory (OOM)" in logs and "`64m`" in logs
    assert not manifests(store)
    assert not docker_client.containers.list(all=True, filters={"label": "mlpipe.pipeline=docker_failing"})


def test_timeout_kills_and_removes_the_container(
    docker_client: Any, tmp_path: Path, store: Path, airflow_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with_timeout = FAILING.replace("        command: [python3", "        timeout: 3s\n        command: [python3")
    spec = write_pipeline(tmp_path, with_timeout, {"step.py": STEP})
    t0 = time.monotonic()
    report = run(spec, store, airflow_home, mode="sleep")
    assert time.monotonic() - t0 < 60
    assert not report.ok
    assert "timed out after 3s" in "".join(capfd.readouterr())
    assert not docker_client.containers.list(all=True, filters={"label": "mlpipe.pipeline=docker_failing"})


# -- a worker killed with SIGKILL ------------------------------------------------------------------

SLEEPER = """
    name: docker_sigkill
    source: steps
    steps:
      nap:
        target: {kind: docker, image: "mlpipe-test:latest", pull: never}
        inputs: {delay: {path: delay.txt}}
        command: [python3, nap.py, "{{ inputs.delay }}", "{{ outputs.out }}"]
        outputs: [out]
"""
NAP = """
    import sys, time
    time.sleep(float(open(sys.argv[1]).read()))
    open(sys.argv[2] + "/done.txt", "w").write("done")
"""


class _TaskInstance:
    """The few TaskInstance fields a run operator reads: identity, and XCom push."""

    def __init__(self, dag_id: str, task_id: str, try_number: int) -> None:
        self.dag_id, self.run_id, self.task_id = dag_id, "manual__direct", task_id
        self.try_number = try_number
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def xcom_pull(self, **_: Any) -> None:
        return None


def _attempt(spec: str, store: str, task_id: str, try_number: int, user: pwd.struct_passwd | None = None) -> None:
    """One attempt of a step's run task, executed in this (child) process; as `user` if given."""
    from airflow_mlpipe.loader import load_pipeline

    dag = load_pipeline(spec).to_dag(store=store)
    if user is not None:
        os.setgroups([grp.getgrnam("docker").gr_gid])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    context = {
        "ti": _TaskInstance(dag.dag_id, task_id, try_number),
        "params": {},
        "logical_date": None,
        "dag_run": SimpleNamespace(run_after=datetime.now(timezone.utc)),
    }
    dag.task_dict[task_id].execute(context)


def test_a_sigkilled_attempt_leaves_no_container_after_the_retry(
    docker_client: Any, tmp_path: Path, store: Path
) -> None:
    """SIGKILL to the task process: the first attempt's container is orphaned, the retry
    removes it by label and succeeds.

    The task process is a child running the operator's `execute` with a minimal task
    instance (identity and XCom push only), because `dag.test()` cannot retry a process
    that was killed; the real scheduler's retry is covered by the end-to-end tests.
    """
    spec = write_pipeline(tmp_path, SLEEPER, {"nap.py": NAP})
    (tmp_path / "delay.txt").write_text("300")
    labels = {"label": ["airflow.dag_id=docker_sigkill", "airflow.task_id=nap.run"]}
    ctx = multiprocessing.get_context("fork")

    first = ctx.Process(target=_attempt, args=(str(spec), str(store), "nap.run", 1))
    first.start()
    deadline = time.monotonic() + 60
    while not docker_client.containers.list(filters={**labels, "status": "running"}):
        assert time.monotonic() < deadline, "the first attempt never started its container"
        time.sleep(0.2)
    os.kill(first.pid or 0, signal.SIGKILL)
    first.join()
    orphans = docker_client.containers.list(all=True, filters=labels)
    assert len(orphans) == 1 and orphans[0].labels["airflow.try_number"] == "1"

    (tmp_path / "delay.txt").write_text("0")
    second = ctx.Process(target=_attempt, args=(str(spec), str(store), "nap.run", 2))
    second.start()
    second.join(timeout=120)
    assert second.exitcode == 0
    assert not docker_client.containers.list(all=True, filters=labels)
    assert len(manifests(store)) == 1


# -- a non-root worker ---------------------------------------------------------------------------

WORKER = "mlpipe-worker"


@pytest.fixture(scope="session")
def worker_user(docker_client: Any) -> pwd.struct_passwd:
    """A non-root user allowed to use the Docker socket, as an Airflow worker account would be."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(WORKER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--create-home", "--groups", "docker", WORKER], check=True)
        return pwd.getpwnam(WORKER)


@pytest.fixture
def worker_dir(worker_user: pwd.struct_passwd) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mlpipe-worker-"))
    os.chown(path, worker_user.pw_uid, worker_user.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_non_root_worker_runs_containers_as_itself_and_owns_the_outputs(
    worker_user: pwd.struct_passwd, worker_dir: Path
) -> None:
    """The task process drops to a non-root worker account (member of `docker`).

    It is forked from the test and switches user after the imports, because this
    machine's interpreter lives under /root, which other accounts cannot read; a real
    worker account has its own installation.
    """
    spec = write_pipeline(worker_dir, TWO_STEPS.replace("docker_two", "docker_nonroot"), {"who.py": WHO})
    store = worker_dir / "store"
    store.mkdir()
    for path in [worker_dir, *worker_dir.rglob("*")]:
        os.chown(path, worker_user.pw_uid, worker_user.pw_gid)
    os.environ["AIRFLOW__MLPIPE__STAT_CACHE"] = str(worker_dir / "statcache.sqlite")
    try:
        child = multiprocessing.get_context("fork").Process(
            target=_attempt, args=(str(spec), str(store), "who.run", 1, worker_user)
        )
        child.start()
        child.join(timeout=300)
    finally:
        del os.environ["AIRFLOW__MLPIPE__STAT_CACHE"]
    assert child.exitcode == 0
    outputs = list(store.glob("objects/*/*/facts.json"))
    assert len(outputs) == 1
    facts = json.loads(outputs[0].read_text())
    assert facts["uid"] == worker_user.pw_uid  # the container ran as the worker
    assert facts["gid"] == worker_user.pw_gid
    assert outputs[0].stat().st_uid == worker_user.pw_uid  # and its outputs are the worker's
