"""Pipeline -> Airflow DAG: a pure, deterministic function.

Runs at every DAG parse and at every task start, so it touches no network, no
Docker, no store and no data: it only arranges operators. One TaskGroup per
step holds `check` (the cache sensor) and `run`.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from airflow.sdk import DAG, Param, TaskGroup, TriggerRule

from airflow_mlpipe.graph import to_mermaid, topological_order
from airflow_mlpipe.operators.base import BaseStepOperator
from airflow_mlpipe.operators.docker import DockerStepOperator
from airflow_mlpipe.operators.local import LocalStepOperator
from airflow_mlpipe.sensors.cache_check import CacheCheckSensor
from airflow_mlpipe.spec import DockerTarget, Pipeline, Step
from airflow_mlpipe.validation import used_params

#: A check waits this long for another run computing the same key before failing.
DEFAULT_CHECK_TIMEOUT = 24 * 3600


def dag_params(pipeline: Pipeline) -> dict[str, Param]:
    params = {
        name: Param(
            spec.default,
            description=spec.description,
            title=spec.title or name,
            **spec.json_schema(),
        )
        for name, spec in pipeline.params.items()
    }
    params["force_rerun"] = Param(
        False,
        type="boolean",
        title="Force re-run",
        description="Recompute every step of this run, ignoring cached results.",
    )
    return params


def dag_doc(pipeline: Pipeline) -> str:
    lines = [f"# {pipeline.name}", ""]
    if pipeline.description:
        lines += [pipeline.description.strip(), ""]
    lines += ["## Steps", "", "```mermaid", to_mermaid(pipeline), "```", ""]
    lines += ["| step | uses params | outputs | description |", "|---|---|---|---|"]
    for step in pipeline.steps:
        uses = ", ".join(f"`{p}`" for p in used_params(pipeline, step)) or "–"
        outs = ", ".join(f"`{o}`" for o in step.outputs) or "–"
        lines.append(f"| `{step.name}` | {uses} | {outs} | {(step.description or '').strip()} |")
    if pipeline.params:
        lines += ["", "## Params", "", "| param | type | default | description |", "|---|---|---|---|"]
        for name, spec in pipeline.params.items():
            lines.append(f"| `{name}` | {spec.type} | `{spec.default!r}` | {spec.description or ''} |")
    lines += ["", f"Compiled by airflow-mlpipe from `{pipeline.spec_file or 'Python'}`."]
    return "\n".join(lines)


def _start_date(value: date | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.combine(value, time.min, tzinfo=timezone.utc)


def _run_operator(step: Step) -> type[BaseStepOperator]:
    return DockerStepOperator if isinstance(step.target, DockerTarget) else LocalStepOperator


def _step_tasks(pipeline: Pipeline, step: Step, store: str | None) -> tuple[CacheCheckSensor, BaseStepOperator]:
    timeout = step.timeout.total_seconds() if step.timeout else None
    check = CacheCheckSensor(
        task_id="check",
        pipeline=pipeline,
        step=step.name,
        store=store,
        timeout=max(DEFAULT_CHECK_TIMEOUT, timeout or 0),
        # Transient failures (a Docker daemon or registry hiccup) deserve another try;
        # spec and missing-image errors fail for good (AirflowFailException).
        retries=2,
        retry_delay=timedelta(seconds=20),
        doc_md=f"Cache check of step `{step.name}`: skips `run` when its outputs are already stored.",
    )
    extra: dict[str, Any] = {}
    if step.pool:
        extra["pool"] = step.pool
    if step.queue:
        extra["queue"] = step.queue
    run = _run_operator(step)(
        task_id="run",
        pipeline=pipeline,
        step=step.name,
        store=store,
        retries=step.retries,
        retry_delay=step.retry_delay,
        trigger_rule=TriggerRule.ALL_SUCCESS,
        doc_md=(step.description or f"Runs step `{step.name}`."),
        **extra,
    )
    check >> run
    return check, run


def compile_pipeline(
    pipeline: Pipeline, *, dag_id: str | None = None, store: str | None = None, **dag_kwargs: Any
) -> DAG:
    """Build the DAG. `dag_kwargs` pass through to `airflow.sdk.DAG` and override the spec."""
    pipeline.check()
    kwargs: dict[str, Any] = {
        "dag_id": dag_id or pipeline.name,
        "schedule": pipeline.schedule,
        "start_date": _start_date(pipeline.start_date),
        "catchup": pipeline.catchup,
        "tags": sorted({"mlpipe", *pipeline.tags}),
        "params": dag_params(pipeline),
        "doc_md": dag_doc(pipeline),
        "description": next(iter((pipeline.description or "").strip().splitlines()), "")[:200] or None,
        "render_template_as_native_obj": False,
    }
    if pipeline.max_active_runs:
        kwargs["max_active_runs"] = pipeline.max_active_runs
    kwargs.update(dag_kwargs)
    with DAG(**kwargs) as dag:
        tasks: dict[str, tuple[CacheCheckSensor, BaseStepOperator]] = {}
        for name in topological_order(pipeline):
            step = pipeline.step(name)
            with TaskGroup(group_id=name, tooltip=step.description or name):
                tasks[name] = _step_tasks(pipeline, step, store)
            for up in step.dependencies():
                # The check waits for the upstream's run; `none_failed` lets a skipped
                # (cache-hit) run pass instead of skipping the rest of the pipeline.
                tasks[up][1] >> tasks[name][0]
    return dag
