"""A step at run time: its rendered command, its fingerprints and its cache key.

Shared by the cache check and the run operators so both compute the same key.
Nothing here runs at DAG parse time.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from airflow_mlpipe.cache_key import KeyComponents, cache_key
from airflow_mlpipe.exceptions import InputMissing, SpecError
from airflow_mlpipe.fingerprint import StatCache, TreeDigest, hash_tree, local_environment_identity
from airflow_mlpipe.manifest import InputRecord, StepResult
from airflow_mlpipe.spec import DEFAULT_IGNORE, DockerTarget, Pipeline, Step
from airflow_mlpipe.store.base import ArtifactStore
from airflow_mlpipe.templating import render
from airflow_mlpipe.validation import used_params

#: XCom key under which checks (on a hit) and runs publish a `StepResult`.
XCOM_KEY = "step_result"


def run_date(context: Mapping[str, Any]) -> str:
    """The run's date: its logical date, or for a manual run without one, its run_after date."""
    when = context.get("logical_date")
    if when is None:
        dag_run = context.get("dag_run")
        when = getattr(dag_run, "run_after", None) or datetime.now(timezone.utc)
    return when.strftime("%Y-%m-%d")


def upstream_result(ti: Any, step: str) -> StepResult:
    """The result of an upstream step in this run: its check's on a hit, else its run's."""
    checked = ti.xcom_pull(task_ids=f"{step}.check", key=XCOM_KEY)
    if checked and checked.get("hit"):
        return StepResult.model_validate(checked)
    ran = ti.xcom_pull(task_ids=f"{step}.run", key=XCOM_KEY)
    if ran:
        return StepResult.model_validate(ran)
    raise InputMissing(f"step `{step}` published no outputs in this run; did its `run` task succeed?")


class StepTaskMixin:
    """What both tasks of a step (check and run) hold: the pipeline, the step's name, the store."""

    pipeline: Pipeline
    step_name: str
    store_uri: str | None

    @property
    def step(self) -> Step:
        return self.pipeline.step(self.step_name)

    @cached_property
    def store(self) -> ArtifactStore:
        from airflow_mlpipe.store import get_store

        return get_store(self.store_uri)


def environment_identity(step: Step) -> str:
    """What the step's process runs on: the image ID (content, not tag) or the local interpreter."""
    target = step.target
    if isinstance(target, DockerTarget):
        from airflow_mlpipe.hooks.docker import DockerEngine

        image = DockerEngine(target.docker_url, target.docker_conn_id).resolve_image(target.image, target.pull)
        return image_identity(image.id)
    return local_environment_identity(target.python or sys.executable, target.packages)


def image_identity(image_id: str) -> str:
    return f"image:{image_id}"


@dataclass(frozen=True)
class Fingerprint:
    """A step's cache key with the facts it was computed from."""

    key: str
    components: KeyComponents
    code: TreeDigest
    inputs: dict[str, InputRecord]
    input_paths: dict[str, Path]


class StepRuntime:
    """Resolves one step of one run: params, date, inputs, code, environment."""

    def __init__(
        self,
        pipeline: Pipeline,
        step: Step,
        *,
        store: ArtifactStore,
        params: Mapping[str, Any],
        run_date: str,
        upstream: Mapping[str, StepResult],
        stat_cache: StatCache | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.step = step
        self.store = store
        self.params = {k: params.get(k, spec.default) for k, spec in pipeline.params.items()}
        self.run_date = run_date
        self.upstream = upstream
        self.stat_cache = stat_cache

    @classmethod
    def from_context(
        cls, pipeline: Pipeline, step: Step, context: Mapping[str, Any], store: ArtifactStore, stat_cache: StatCache
    ) -> StepRuntime:
        ti = context["ti"]
        ups = {up for up, _ in step.upstream_refs().values()}
        return cls(
            pipeline,
            step,
            store=store,
            params=dict(context.get("params") or {}),
            run_date=run_date(context),
            upstream={up: upstream_result(ti, up) for up in sorted(ups)},
            stat_cache=stat_cache,
        )

    # -- templates -------------------------------------------------------------
    def variables(self, inputs: Mapping[str, str], outputs: Mapping[str, str]) -> dict[str, Any]:
        return {"params": self.params, "inputs": dict(inputs), "outputs": dict(outputs), "run_date": self.run_date}

    def render(self, text: str, variables: Mapping[str, Any], field: str) -> str:
        try:
            return render(text, variables)
        except TemplateError as exc:
            raise SpecError.single(
                f"template could not be rendered: {exc}", file=self.pipeline.spec_file, step=self.step.name, field=field
            ) from exc

    def render_command(self, inputs: Mapping[str, str], outputs: Mapping[str, str]) -> list[str]:
        variables = self.variables(inputs, outputs)
        return [self.render(arg, variables, f"command[{i}]") for i, arg in enumerate(self.step.command)]

    def render_env(self, inputs: Mapping[str, str], outputs: Mapping[str, str]) -> dict[str, str]:
        variables = self.variables(inputs, outputs)
        return {k: self.render(v, variables, f"env.{k}") for k, v in self.step.env.items()}

    def placeholders(self) -> tuple[dict[str, str], dict[str, str]]:
        """Stable stand-ins for paths, so the key never depends on where data sits."""
        return (
            {name: f"<input:{name}>" for name in self.step.inputs},
            {name: f"<output:{name}>" for name in self.step.outputs},
        )

    # -- fingerprints ----------------------------------------------------------
    def source_dir(self) -> Path:
        return self.pipeline.source_dir(self.step)

    def code_tree(self, root: Path | None = None, cache: StatCache | None = None) -> TreeDigest:
        src = self.step.source
        root = root or self.source_dir()
        if not root.is_dir():
            raise InputMissing(
                f"step `{self.step.name}`: source dir `{root}` does not exist; check `source.dir` in the spec"
            )
        return hash_tree(root, include=src.include, exclude=src.exclude, ignore=DEFAULT_IGNORE, cache=cache)

    def snapshot_code(self, dest: Path) -> TreeDigest:
        """Copy the step's code files to `dest` and fingerprint the copy: the key then
        describes exactly the code that runs, even if the checkout changes meanwhile."""
        root = self.source_dir()
        for rel in self.code_tree(root, self.stat_cache).files:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            source = root / rel
            if source.exists():
                shutil.copy2(source, target)  # follows links: the copy holds what was hashed
            else:
                target.symlink_to(source.readlink())  # a dangling link stays one
        return self.code_tree(dest)

    def resolve_inputs(self) -> tuple[dict[str, InputRecord], dict[str, Path]]:
        records: dict[str, InputRecord] = {}
        paths: dict[str, Path] = {}
        base = self.pipeline.base_dir or Path.cwd()
        variables = self.variables({}, {})
        for name, ref in self.step.inputs.items():
            if isinstance(ref, str):
                up, out = ref.split(".")
                result = self.upstream[up]
                if out not in result.outputs:
                    raise InputMissing(f"step `{up}` has no output `{out}` in this run (needed by `{self.step.name}`)")
                record = result.outputs[out]
                records[name] = InputRecord(digest=record.digest, source=ref)
                paths[name] = self.store.local_path(record)
                continue
            rendered = Path(self.render(ref.path, variables, f"inputs.{name}.path")).expanduser()
            path = (base / rendered).resolve()
            if not path.exists():
                raise InputMissing(
                    f"step `{self.step.name}`: input `{name}` not found at `{path}` "
                    f"(field `inputs.{name}.path` = `{ref.path}`); is the data there for {self.run_date}?"
                )
            records[name] = InputRecord(digest=hash_tree(path, cache=self.stat_cache).digest, source=str(path))
            paths[name] = path
        return records, paths

    def fingerprint(self, code: TreeDigest, environment: str) -> Fingerprint:
        records, paths = self.resolve_inputs()
        inputs, outputs = self.placeholders()
        used = used_params(self.pipeline, self.step)
        components = KeyComponents(
            argv=tuple(self.render_command(inputs, outputs)),
            env=self.render_env(inputs, outputs),
            params={name: self.params[name] for name in used},
            code=code.digest,
            environment=environment,
            inputs={name: rec.digest for name, rec in records.items()},
            outputs=tuple(sorted(self.step.outputs)),
            salt=f"{self.pipeline.cache_version}/{self.step.cache.version}",
        )
        return Fingerprint(cache_key(components), components, code, records, paths)
