"""Smoke test of the real stack: a pipeline triggered through the REST API runs under the
scheduler and the LocalExecutor; its second run is served from the cache."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tests.conftest import EXAMPLES
from tests.e2e.stack import AirflowStack, proc_table

DAG_ID = "wine_classifier_python"
STEPS = ("prepare", "train", "evaluate", "register")
CONF = {"min_accuracy": 0.5}


def _run(stack: AirflowStack) -> tuple[dict, dict[str, str | None], float]:
    started = time.monotonic()
    run_id = stack.trigger(DAG_ID, CONF)  # logical_date null, like a trigger from the UI
    run = stack.wait_run(DAG_ID, run_id, timeout=300)
    seconds = time.monotonic() - started
    states = stack.task_instances(DAG_ID, run_id)
    print(f"\n[e2e] {run_id}: {run['state']} in {seconds:.1f}s {states}")
    assert run["state"] == "success", "\n".join(
        [str(states)] + [stack.task_log(DAG_ID, run_id, t) for t, s in states.items() if s != "success"]
    )
    return run, states, seconds


def test_trigger_through_rest_api_then_cache_hits(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    stack.unpause(DAG_ID)
    first, states, _ = _run(stack)
    assert states == {f"{step}.{task}": "success" for step in STEPS for task in ("check", "run")}

    second, states, _ = _run(stack)
    if second["run_after"][:10] != first["run_after"][:10]:  # crossed midnight UTC: the date is in the key
        second, states, _ = _run(stack)
    assert states == {
        **{f"{step}.check": "success" for step in STEPS},
        **{f"{step}.run": "skipped" for step in STEPS},
    }
    assert (stack.store / "manifests").is_dir()


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
        print(f"\n[e2e] stopping mid-run; {len(alive)} stack processes: {sorted({p.comm for p in alive.values()})}")
        # the four components, their helpers, the executor's workers and the task's supervisor
        assert len(alive) > len(stack.procs), alive
        assert {p.pid for p in stack.procs.values()} <= set(alive)
    finally:
        stack.stop()
    print(f"[e2e] stopped in {stack.timings['stop']:.1f}s")
    assert stack.remaining() == {}
    table = proc_table()
    # Same pid and start time: the same process. A killed one may linger as a zombie until
    # PID 1 reaps it; that is no longer a running process.
    survivors = [table[pid] for pid, p in alive.items() if pid in table and table[pid].starttime == p.starttime]
    assert [p for p in survivors if p.state not in ("Z", "X")] == []
    stack.stop()  # idempotent
