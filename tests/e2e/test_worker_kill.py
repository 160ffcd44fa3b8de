"""A worker's task process killed with SIGKILL mid-step, under the real scheduler: the
container it started is orphaned, Airflow retries the task, and the retry removes the
orphan by its labels and succeeds."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from typing import Any

from tests.e2e.stack import AirflowStack

DAG_ID = "docker_sigkill_e2e"
PIPELINE = """
    name: docker_sigkill_e2e
    source: sigkill_steps
    steps:
      nap:
        retries: 1
        retry_delay: 2s
        target: {kind: docker, image: "mlpipe-test:latest", pull: never}
        inputs: {delay: {path: sigkill_delay.txt}}
        command: [python3, nap.py, "{{ inputs.delay }}", "{{ outputs.out }}"]
        outputs: [out]
"""
NAP = """
    import sys, time
    time.sleep(float(open(sys.argv[1]).read()))
    open(sys.argv[2] + "/done.txt", "w").write("done")
"""


def test_sigkilled_task_process_is_retried_and_leaves_no_container(
    airflow_stack: AirflowStack, docker_client: Any
) -> None:
    stack = airflow_stack
    dags = stack.dags_folder
    (dags / "sigkill_steps").mkdir(exist_ok=True)
    (dags / "sigkill_steps" / "nap.py").write_text(textwrap.dedent(NAP))
    (dags / "sigkill_delay.txt").write_text("600")
    (dags / "sigkill_pipeline.yaml").write_text(textwrap.dedent(PIPELINE))
    (dags / "sigkill_dag.py").write_text(
        'from airflow_mlpipe import load_pipeline\n\ndag = load_pipeline("sigkill_pipeline.yaml").to_dag()\n'
    )
    stack.wait_dag(DAG_ID, timeout=180)
    stack.unpause(DAG_ID)
    try:
        run_id = stack.trigger(DAG_ID, {})
        labels = {"label": [f"airflow.dag_id={DAG_ID}", "airflow.task_id=nap.run"]}
        deadline = time.monotonic() + 180
        while not (running := docker_client.containers.list(filters={**labels, "status": "running"})):
            assert time.monotonic() < deadline, stack.task_instances(DAG_ID, run_id)
            time.sleep(0.5)
        first = running[0]
        assert first.labels["airflow.try_number"] == "1"
        pid = int(first.labels["mlpipe.worker"].rsplit(":", 1)[1])
        (dags / "sigkill_delay.txt").write_text("0")  # the retry's step finishes at once
        os.kill(pid, signal.SIGKILL)  # the task process: no on_kill, the container lives on
        time.sleep(1)
        assert docker_client.containers.list(all=True, filters=labels), "the orphan should still exist"

        run = stack.wait_run(DAG_ID, run_id, timeout=300)
        states = stack.task_instances(DAG_ID, run_id)
        assert run["state"] == "success", (states, stack.task_log(DAG_ID, run_id, "nap.run", try_number=2))
        assert states["nap.run"] == "success"
        log = stack.task_log(DAG_ID, run_id, "nap.run", try_number=2)
        assert "left by try 1" in log
        assert not docker_client.containers.list(all=True, filters=labels)
    finally:
        stack.pause(DAG_ID)
