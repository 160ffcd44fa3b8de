"""Smoke test of the real stack: a pipeline triggered through the REST API runs under the
scheduler and the LocalExecutor; its second run is served from the cache."""

from __future__ import annotations

import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.conftest import EXAMPLES
from tests.e2e.stack import AirflowStack, proc_table

DAG_ID = "wine_classifier_python"
STEPS = ("prepare", "train", "evaluate", "register")
CONF = {"min_accuracy": 0.5}


def _finish(stack: AirflowStack, run_id: str, started: float) -> tuple[dict[str, Any], dict[str, str | None]]:
    run = stack.wait_run(DAG_ID, run_id, timeout=300)
    states = stack.task_instances(DAG_ID, run_id)
    print(f"\n[e2e] {run_id}: {run['state']} in {time.monotonic() - started:.1f}s {states}")
    assert run["state"] == "success", "\n".join(
        [str(states)] + [stack.task_log(DAG_ID, run_id, t) for t, s in states.items() if s != "success"]
    )
    return run, states


def _manual_run(stack: AirflowStack) -> tuple[dict[str, Any], dict[str, str | None]]:
    started = time.monotonic()
    run_id = stack.trigger(DAG_ID, CONF)  # logical_date null, as the UI's trigger button does
    return _finish(stack, run_id, started)


def _settle_scheduled_run(stack: AirflowStack, due: bool) -> None:
    """Unpausing a periodic DAG (catchup=False) makes the scheduler create its latest
    scheduled run at once. That run computes the same keys as today's manual runs, so let it
    finish, then empty the store (other tests may have filled it too): the manual runs below
    start from a cold cache."""
    if due:
        started = time.monotonic()
        deadline = started + 60
        while not (scheduled := stack.runs(DAG_ID, run_type="scheduled")):
            assert time.monotonic() < deadline, "unpaused, but the scheduler created no scheduled run"
            time.sleep(0.5)
        _finish(stack, scheduled[-1]["dag_run_id"], started)
    for entry in stack.store.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def test_trigger_through_rest_api_then_cache_hits(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    # The stack's configuration lives only in its subprocesses' environment.
    assert os.environ.get("AIRFLOW_HOME") != stack.env["AIRFLOW_HOME"]
    # Authentication is real: no token, or a wrong password, gets nothing.
    assert stack.http.get(f"/api/v2/dags/{DAG_ID}").status_code == 401
    assert stack.http.post("/auth/token", json={"username": stack.username, "password": "wrong"}).status_code == 401
    next_run_after = stack.dag(DAG_ID)["next_dagrun_run_after"]
    due = next_run_after is not None and datetime.fromisoformat(next_run_after) <= datetime.now(timezone.utc)
    stack.unpause(DAG_ID)
    try:
        _settle_scheduled_run(stack, due)

        first, states = _manual_run(stack)
        assert states == {f"{step}.{task}": "success" for step in STEPS for task in ("check", "run")}
        _assert_manifest_links(stack, first["dag_run_id"])

        second, states = _manual_run(stack)
        if second["run_after"][:10] != first["run_after"][:10]:  # crossed midnight UTC: the date is in the key
            second, states = _manual_run(stack)
        assert states == {
            **{f"{step}.check": "success" for step in STEPS},
            **{f"{step}.run": "skipped" for step in STEPS},
        }
    finally:
        stack.pause(DAG_ID)  # no surprise scheduled runs for later tests


def _assert_manifest_links(stack: AirflowStack, run_id: str) -> None:
    """Both tasks of a step link to its manifest, served by the plugin to users who may read the DAG."""
    urls = set()
    for task in ("train.check", "train.run"):
        status, links = stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task}/links")
        assert status == 200, links
        assert links["extra_links"].get("Manifest"), links
        urls.add(links["extra_links"]["Manifest"])
    assert len(urls) == 1  # the same result
    url = urls.pop()
    assert url.startswith(stack.base_url.rstrip("/") + "/mlpipe/dags/")
    path = url[len(stack.base_url.rstrip("/")) :]
    status, manifest = stack.get(path)
    assert status == 200, manifest
    assert manifest["step"] == "train" and manifest["producer"]["run_id"] == run_id
    assert manifest["components"]["params"]["n_estimators"] == 50
    assert stack.http.get(path).status_code == 401  # no token, no manifest


def test_stop_ends_every_process_even_mid_run(tmp_path: Path) -> None:
    """A stack of its own, stopped while a task runs: no process of it may survive."""
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(EXAMPLES / "python_api_example.py", dags)
    shutil.copytree(EXAMPLES / "wine", dags / "wine", ignore=shutil.ignore_patterns("__pycache__"))
    stack = AirflowStack(tmp_path / "stack", dags, tmp_path / "store")
    try:
        stack.start(dag_ids=[DAG_ID])
        stack.unpause(DAG_ID)
        run_id = stack.trigger(DAG_ID, CONF)
        deadline = time.monotonic() + 120
        while "running" not in stack.task_instances(DAG_ID, run_id).values():
            assert time.monotonic() < deadline, stack.task_instances(DAG_ID, run_id)
            time.sleep(0.2)
        alive = stack.remaining()
        print(f"\n[e2e] stopping mid-run; {len(alive)} stack processes: {sorted(p.comm for p in alive.values())}")
        # the four components, their helpers, the executor's workers and the tasks' supervisors
        assert len(alive) > len(stack.procs), alive
        assert {p.pid for p in stack.procs.values()} <= set(alive)
    finally:
        stack.stop()
    killed = sorted(p.comm for p in stack.killed.values())
    print(f"[e2e] stopped in {stack.timings['stop']:.1f}s; needed SIGKILL: {killed}")
    assert stack.remaining() == {}
    assert all(p.poll() is not None for p in stack.procs.values())
    # Same pid and start time: the same process. A killed one may linger as a zombie until
    # PID 1 reaps it; that is no longer a running process.
    table = proc_table()
    survivors = [table[pid] for pid, p in alive.items() if pid in table and table[pid].starttime == p.starttime]
    assert [p for p in survivors if p.state not in ("Z", "X")] == []
    stack.stop()  # idempotent
