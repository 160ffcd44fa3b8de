"""`mlpipe run`: one pipeline run through Airflow, in this process, with a private metadata DB.

The run is a real Airflow DAG run (`dag.test()`): the scheduler's dependency
rules, trigger rules, XCom and skips all apply. Only the executor and the
scheduler loop are replaced by Airflow's in-process test loop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow_mlpipe.loader import load_pipeline
from airflow_mlpipe.runtime import XCOM_KEY
from airflow_mlpipe.version import __version__


@dataclass(frozen=True)
class StepRow:
    step: str
    cache: str  # hit | miss | reused | -
    state: str  # state of the run task
    seconds: float | None
    key: str | None
    metrics: dict[str, Any]


@dataclass(frozen=True)
class RunReport:
    dag_id: str
    run_id: str
    state: str
    rows: tuple[StepRow, ...]

    @property
    def ok(self) -> bool:
        return self.state == "success"

    def table(self) -> str:
        header = ("step", "cache", "run task", "duration", "key", "metrics")
        body = [
            (
                r.step,
                r.cache,
                r.state,
                "-" if r.seconds is None else f"{r.seconds:.2f}s",
                (r.key or "-")[:12],
                " ".join(f"{k}={_fmt(v)}" for k, v in sorted(r.metrics.items())) or "-",
            )
            for r in self.rows
        ]
        widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
        lines = [
            "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *body]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        hits = sum(r.cache == "hit" for r in self.rows)
        lines.append(f"{self.dag_id} {self.run_id}: {self.state}; {hits}/{len(self.rows)} steps from cache")
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class ParamError(ValueError):
    """A `-p name=value` the pipeline does not accept."""


def split_params(pairs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise ParamError(f"`-p {pair}`: write `-p name=value`")
        params[name] = raw
    return params


def coerce_params(raw: Mapping[str, str], types: Mapping[str, str | None]) -> dict[str, Any]:
    """Values typed by the param's JSON-schema type: JSON for non-strings, verbatim for strings."""
    conf: dict[str, Any] = {}
    for name, text in raw.items():
        if name not in types:
            known = ", ".join(f"`{k}`" for k in sorted(types))
            raise ParamError(f"`{name}` is not a param of this pipeline (params: {known})")
        if types[name] == "string":
            conf[name] = text
            continue
        try:
            conf[name] = json.loads(text)
        except ValueError:
            conf[name] = text
    return conf


def prepare_home(home: Path, store: str | None) -> dict[str, str]:
    """Environment for a private Airflow under `home` (set before Airflow is imported)."""
    env = {
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow' / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__MLPIPE__STORE": store or os.environ.get("AIRFLOW__MLPIPE__STORE") or str(home / "store"),
    }
    (home / "airflow").mkdir(parents=True, exist_ok=True)
    (home / "dags").mkdir(parents=True, exist_ok=True)
    return env


def migrate_db(home: Path, env: Mapping[str, str]) -> None:
    import airflow

    stamp = home / "airflow" / f".migrated-{airflow.__version__}"
    if stamp.exists():
        return
    print(f"Migrating the private Airflow metadata DB in {home / 'airflow'} (once)...", file=sys.stderr)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env={**os.environ, **env},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    stamp.touch()


def write_dag_file(dags: Path, spec: Path, name: str, *, local: bool = False) -> Path:
    """The two-line DAG file for `spec`, so Airflow parses the pipeline as it would in production."""
    for old in dags.glob("mlpipe_run_*.py"):
        old.unlink()
    path = dags / f"mlpipe_run_{name.replace('-', '_').replace('.', '_')}.py"
    if spec.suffix == ".py":
        body = (
            "import runpy\n\nfrom airflow.sdk import DAG\n\n"
            f"globals().update({{k: v for k, v in runpy.run_path({str(spec)!r}).items() if isinstance(v, DAG)}})\n"
        )
    else:
        convert = ".on_local_target()" if local else ""
        body = f"from airflow_mlpipe import load_pipeline\n\ndag = load_pipeline({str(spec)!r}){convert}.to_dag()\n"
    path.write_text(f"# Written by `mlpipe run` (airflow-mlpipe {__version__}).\n{body}")
    return path


def run_pipeline(
    spec: Path,
    *,
    conf: Mapping[str, Any],
    home: Path,
    cli_params: Mapping[str, str] | None = None,
    store: str | None = None,
    logical_date: datetime | None = None,
    verbose: bool = False,
    local: bool = False,
) -> RunReport:
    """Run the pipeline in `spec` (YAML, or a Python DAG file) once and report per step."""
    spec = spec.resolve()
    pipeline = load_pipeline(spec) if spec.suffix != ".py" else None
    if pipeline is not None:  # refuse bad params before touching anything
        coerce_params(cli_params or {}, {"force_rerun": "boolean", **{k: v.type for k, v in pipeline.params.items()}})
    env = prepare_home(home, store)
    if not verbose:
        env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    os.environ.update(env)
    migrate_db(home, env)

    from airflow.dag_processing.dagbag import DagBag

    if local and pipeline is None:
        raise ParamError("`--local` works with YAML pipelines only; set the targets in the Python file instead")
    dag_file = write_dag_file(home / "dags", spec, pipeline.name if pipeline else spec.stem, local=local)
    bag = DagBag(dag_folder=str(dag_file))
    if bag.import_errors:
        raise RuntimeError("\n".join(bag.import_errors.values()))
    if not bag.dags:
        raise RuntimeError(f"`{spec}` defines no DAG")
    dag = next(iter(bag.dags.values()))
    types = {name: dag.params.get_param(name).schema.get("type") for name in dag.params}
    run_conf = {**conf, **coerce_params(cli_params or {}, types)}
    dag_run = dag.test(logical_date=logical_date, run_conf=run_conf or None)
    return collect_report(dag, dag_run.run_id)


def collect_report(dag: Any, run_id: str) -> RunReport:
    """Per-step cache result, duration and metrics of a finished run, from the metadata DB."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        dr = session.scalars(select(DagRun).where(DagRun.dag_id == dag.dag_id, DagRun.run_id == run_id)).one()
        tis = {
            ti.task_id: ti
            for ti in session.scalars(
                select(TaskInstance).where(TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == run_id)
            )
        }
        query = XComModel.get_many(run_id=run_id, dag_ids=dag.dag_id, key=XCOM_KEY)
        xcoms = {x.task_id: XComModel.deserialize_value(x) for x in session.scalars(query)}  # type: ignore[attr-defined]
        rows = []
        for group in dag.task_group.children:
            check, run = tis.get(f"{group}.check"), tis.get(f"{group}.run")
            checked = xcoms.get(f"{group}.check") or {}
            ran = xcoms.get(f"{group}.run") or {}
            if checked.get("hit"):
                cache, result, seconds = "hit", checked, check.duration if check else None
            elif check is not None and check.state == "success":
                # `reused`: the run found the result computed meanwhile by a concurrent run.
                cache = "reused" if ran.get("hit") else "miss"
                result, seconds = ran, run.duration if run else None
            else:
                cache, result, seconds = "-", {}, None
            rows.append(
                StepRow(
                    step=group,
                    cache=cache,
                    state=str(run.state) if run and run.state else "not run",
                    seconds=seconds,
                    key=result.get("key") or checked.get("key"),
                    metrics=result.get("metrics") or {},
                )
            )
        return RunReport(dag.dag_id, run_id, str(dr.state), tuple(rows))
