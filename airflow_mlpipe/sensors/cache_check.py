"""The cache check: fingerprint a step for this run and short-circuit it on a hit."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseSensorOperator, SkipMixin, TriggerRule
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlpipe.cache_key import explain_change
from airflow_mlpipe.config import stat_cache_path
from airflow_mlpipe.exceptions import SpecError
from airflow_mlpipe.fingerprint import StatCache
from airflow_mlpipe.hooks.docker import ImageUnavailable
from airflow_mlpipe.links import ManifestLink
from airflow_mlpipe.manifest import Manifest, StepResult
from airflow_mlpipe.runtime import XCOM_KEY, Fingerprint, StepRuntime, StepTaskMixin, environment_identity
from airflow_mlpipe.spec import Pipeline


class CacheCheckSensor(StepTaskMixin, BaseSensorOperator, SkipMixin):
    """Succeeds at once on a miss (the run task computes), skips the run task on a hit,
    and keeps poking while another task holds the lease on the same key."""

    ui_color = "#e8f1fb"
    operator_extra_links = (ManifestLink(),)

    def __init__(self, *, pipeline: Pipeline, step: str, store: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("poke_interval", 10)
        kwargs.setdefault("mode", "poke")
        kwargs.setdefault("trigger_rule", TriggerRule.NONE_FAILED)
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.step_name = step
        self.store_uri = store

    def poke(self, context: Any) -> bool:
        ti = context["ti"]
        step = self.step
        stat_cache = StatCache(stat_cache_path())
        try:
            runtime = StepRuntime.from_context(self.pipeline, step, context, self.store, stat_cache)
            fp = runtime.fingerprint(runtime.code_tree(cache=stat_cache), environment_identity(step))
        except SpecError as exc:
            raise AirflowFailException(str(exc)) from exc
        except ImageUnavailable as exc:
            if exc.retryable:
                raise
            raise AirflowFailException(f"Step `{step.name}`: {exc}") from exc
        finally:
            stat_cache.close()
        short = fp.key[:12]

        reason = None
        manifest = None
        if not step.cache.enabled:
            reason = "caching is off for this step (`cache: false`)"
        elif (context.get("params") or {}).get("force_rerun"):
            reason = "`force_rerun` is set for this run"
        else:
            manifest = self.store.get(fp.key)
            if manifest is not None:
                reason = self.store.unusable(manifest, max_age=step.cache.max_age, verify=step.cache.verify)
                if reason is None:
                    self._hit(ti, manifest, short)
        if reason is None:
            holder = self.store.lease_holder(fp.key)
            if holder is not None:
                self.log.info(
                    "mlpipe cache WAIT for step `%s` (key %s): being computed by %s", step.name, short, holder.owner
                )
                return False
            reason = self._explain_miss(fp)
        self.log.info("mlpipe cache MISS for step `%s` (key %s): %s", step.name, short, reason)
        ti.xcom_push(key=XCOM_KEY, value=StepResult(step=step.name, key=fp.key, hit=False).model_dump(mode="json"))
        return True

    def _hit(self, ti: Any, manifest: Manifest, short: str) -> None:
        producer = manifest.producer
        self.log.info(
            "mlpipe cache HIT for step `%s` (key %s): outputs computed by %s/%s in %.1fs; skipping the run task",
            self.step.name,
            short,
            producer.dag_id,
            producer.run_id,
            manifest.duration_s,
        )
        ti.xcom_push(key=XCOM_KEY, value=StepResult.of(manifest, hit=True).model_dump(mode="json"))
        run = [t for t in self.downstream_list if t.task_id == f"{self.step.name}.run"]
        self.skip(ti=ti, tasks=run)  # raises: this task succeeds and `run` is skipped

    def _explain_miss(self, fp: Fingerprint) -> str:
        latest = self.store.latest(self.pipeline.name, self.step.name)
        if latest is None:
            return "no earlier result of this step in the store"
        changes = explain_change(latest.components, fp.components, latest.code_files, fp.code.files)
        if not changes:
            return "the same key was computed before but its result is gone"
        return "changed since the last result: " + ", ".join(changes)
