"""The run half of a step, independent of where the process runs.

Stages inputs and a fresh directory per output, runs the step through the
target (`run_process`), then commits: outputs first, manifest last. A failure
or a kill at any point leaves no manifest, so nothing half-written is a hit.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import time
from abc import abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlpipe.config import stat_cache_path
from airflow_mlpipe.exceptions import SpecError, StepFailed
from airflow_mlpipe.fingerprint import StatCache
from airflow_mlpipe.links import ManifestLink
from airflow_mlpipe.manifest import Manifest, OutputRecord, Producer, StepResult
from airflow_mlpipe.runtime import XCOM_KEY, Fingerprint, StepRuntime, StepTaskMixin, environment_identity
from airflow_mlpipe.spec import Pipeline
from airflow_mlpipe.store import Lease
from airflow_mlpipe.version import __version__

#: How long a lease lasts when a step has no timeout.
DEFAULT_LEASE = timedelta(hours=24)
METRICS_FILE = "metrics.json"


@dataclass
class Invocation:
    """Everything a target needs to run one step attempt."""

    argv: list[str]
    env: dict[str, str]
    workdir: Path
    code_dir: Path
    inputs: dict[str, Path]
    outputs: dict[str, Path]
    metrics_file: Path
    timeout: float | None
    labels: dict[str, str] = field(default_factory=dict)


class BaseStepOperator(StepTaskMixin, BaseOperator):
    """Computes a step and commits its result; subclasses say how to run the process."""

    ui_color = "#d9f2e6"
    operator_extra_links = (ManifestLink(),)

    def __init__(self, *, pipeline: Pipeline, step: str, store: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.step_name = step
        self.store_uri = store

    # -- what targets provide ----------------------------------------------------
    def environment_identity(self) -> str:
        return environment_identity(self.step)

    def visible_paths(self, inv: Invocation) -> tuple[dict[str, str], dict[str, str], str]:
        """Input, output and metrics paths as the process sees them (containers remap)."""
        return (
            {k: str(v) for k, v in inv.inputs.items()},
            {k: str(v) for k, v in inv.outputs.items()},
            str(inv.metrics_file),
        )

    @abstractmethod
    def run_process(self, inv: Invocation, context: Any) -> None:
        """Run the step; raise `StepFailed` on a non-zero exit, timeout or kill."""

    # -- the flow --------------------------------------------------------------
    def execute(self, context: Any) -> None:
        ti = context["ti"]
        step = self.step
        workdir = Path(tempfile.mkdtemp(prefix=f"mlpipe-{step.name}-"))
        staging: dict[str, Path] = {}
        lease: Lease | None = None
        try:
            runtime, fp = self._fingerprint(context, workdir)
            lease = self._lease(fp.key, ti)
            force = bool((context.get("params") or {}).get("force_rerun"))
            done = self.store.get(fp.key) if step.cache.enabled and not force else None
            if done is not None and not self.store.unusable(done, max_age=step.cache.max_age, verify=step.cache.verify):
                self.log.info("Step `%s` was computed by %s meanwhile; reusing it", step.name, done.producer.run_id)
                self._publish(ti, done, hit=True)
                return

            if removed := self.store.remove_stale_staging():
                self.log.info("Removed %d stale staging dirs left by dead attempts", removed)
            staging = {name: self.store.new_staging(f"{step.name}-{name}") for name in step.outputs}
            (workdir / "meta").mkdir()
            inv = Invocation(
                argv=[],
                env={},
                workdir=workdir,
                code_dir=workdir / "code",
                inputs=fp.input_paths,
                outputs=staging,
                metrics_file=workdir / "meta" / METRICS_FILE,
                timeout=step.timeout.total_seconds() if step.timeout else None,
                labels=self._labels(ti),
            )
            ins, outs, metrics_path = self.visible_paths(inv)
            inv.argv = runtime.render_command(ins, outs)
            inv.env = {**runtime.render_env(ins, outs), **self._mlpipe_env(runtime, ins, outs, metrics_path)}

            started = datetime.now(timezone.utc)
            t0 = time.monotonic()
            self.log.info("Running step `%s`: %s", step.name, inv.argv)
            self.run_process(inv, context)
            finished = started + timedelta(seconds=time.monotonic() - t0)
            metrics = _read_metrics(inv.metrics_file, step.name)
            outputs = {name: self.store.commit_output(path) for name, path in staging.items()}
            staging = {}
            manifest = self._commit(ti, fp, outputs=outputs, metrics=metrics, started=started, finished=finished)
            self._publish(ti, manifest, hit=False)
        finally:
            for path in staging.values():
                shutil.rmtree(path, ignore_errors=True)
            shutil.rmtree(workdir, ignore_errors=True)
            if lease is not None:
                self.store.release_lease(lease)

    def _fingerprint(self, context: Any, workdir: Path) -> tuple[StepRuntime, Fingerprint]:
        """Copy the step's code into `workdir` and compute the key of exactly that code."""
        stat_cache = StatCache(stat_cache_path())
        try:
            runtime = StepRuntime.from_context(self.pipeline, self.step, context, self.store, stat_cache)
            code = runtime.snapshot_code(workdir / "code")
            return runtime, runtime.fingerprint(code, self.environment_identity())
        except SpecError as exc:
            raise AirflowFailException(str(exc)) from exc
        finally:
            stat_cache.close()

    def _commit(
        self,
        ti: Any,
        fp: Fingerprint,
        *,
        outputs: dict[str, OutputRecord],
        metrics: dict[str, Any],
        started: datetime,
        finished: datetime,
    ) -> Manifest:
        """Write the manifest after the outputs: only now is the result a cache hit."""
        manifest = Manifest(
            key=fp.key,
            pipeline=self.pipeline.name,
            step=self.step_name,
            components=fp.components,
            code_files=fp.code.files,
            inputs=fp.inputs,
            outputs=outputs,
            metrics=metrics,
            started_at=started,
            finished_at=finished,
            producer=Producer(
                dag_id=ti.dag_id,
                run_id=ti.run_id,
                task_id=ti.task_id,
                try_number=ti.try_number,
                hostname=socket.gethostname(),
            ),
            mlpipe_version=__version__,
        )
        self.store.put(manifest)
        self.store.set_latest(manifest)
        self.log.info(
            "Step `%s` done in %.1fs; key %s; outputs %s; metrics %s",
            self.step_name,
            manifest.duration_s,
            fp.key[:12],
            {k: v.digest[:12] for k, v in outputs.items()},
            metrics,
        )
        return manifest

    def _publish(self, ti: Any, manifest: Manifest, *, hit: bool) -> None:
        ti.xcom_push(key=XCOM_KEY, value=StepResult.of(manifest, hit=hit).model_dump(mode="json"))

    def _lease(self, key: str, ti: Any) -> Lease:
        """Claim the key, waiting while another task computes it (then we reuse its result)."""
        owner = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.try_number}"
        ttl = (self.step.timeout or DEFAULT_LEASE) + timedelta(minutes=5)
        announced = False
        while True:
            lease = self.store.acquire_lease(key, owner, ttl)
            if lease is not None:
                return lease
            if not announced:
                holder = self.store.lease_holder(key)
                self.log.info("Key %s is being computed by %s; waiting", key[:12], holder.owner if holder else "?")
                announced = True
            time.sleep(2)

    def _labels(self, ti: Any) -> dict[str, str]:
        return {
            "mlpipe.pipeline": self.pipeline.name,
            "mlpipe.step": self.step_name,
            "airflow.dag_id": ti.dag_id,
            "airflow.run_id": ti.run_id,
            "airflow.task_id": ti.task_id,
            "airflow.try_number": str(ti.try_number),
        }

    def _mlpipe_env(
        self, runtime: StepRuntime, inputs: dict[str, str], outputs: dict[str, str], metrics: str
    ) -> dict[str, str]:
        env = {"MLPIPE_STEP": self.step_name, "MLPIPE_RUN_DATE": runtime.run_date, "MLPIPE_METRICS_FILE": metrics}
        env.update({f"MLPIPE_INPUT_{k.upper()}": v for k, v in inputs.items()})
        env.update({f"MLPIPE_OUTPUT_{k.upper()}": v for k, v in outputs.items()})
        for name in self.step.params:
            value = runtime.params[name]
            env[f"MLPIPE_PARAM_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        return env


def _read_metrics(path: Path, step: str) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constants)
    except ValueError as exc:
        raise StepFailed(
            step, f"the metrics file `$MLPIPE_METRICS_FILE` is not valid JSON (NaN and Infinity are not allowed): {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise StepFailed(step, "the metrics file must hold a JSON object of name -> value")
    return data


def _no_constants(name: str) -> None:
    raise ValueError(f"`{name}` is not a JSON value")
