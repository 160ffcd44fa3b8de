"""Manifests: the record of one computed step, and its lineage."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from airflow_mlpipe.cache_key import KeyComponents

MANIFEST_FORMAT = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OutputRecord(_Frozen):
    """One committed output: its content digest, where it lives, how big it is."""

    digest: str
    uri: str
    size: int
    files: int


class InputRecord(_Frozen):
    digest: str
    #: `step.output` for upstream data, the resolved path for external data.
    source: str


class Producer(_Frozen):
    """The Airflow task attempt that computed the outputs."""

    dag_id: str
    run_id: str
    task_id: str
    try_number: int
    hostname: str


class Manifest(_Frozen):
    format: int = MANIFEST_FORMAT
    key: str
    pipeline: str
    step: str
    components: KeyComponents
    code_files: dict[str, str]
    inputs: dict[str, InputRecord]
    outputs: dict[str, OutputRecord]
    metrics: dict[str, JsonValue] = Field(default_factory=dict)
    started_at: datetime
    finished_at: datetime
    producer: Producer
    mlpipe_version: str

    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


class StepResult(_Frozen):
    """What a check (on a hit) or a run hands to downstream steps through XCom."""

    step: str
    key: str
    hit: bool
    outputs: dict[str, OutputRecord] = Field(default_factory=dict)
    metrics: dict[str, JsonValue] = Field(default_factory=dict)
    duration_s: float | None = None
    #: The run that computed the outputs (differs from this run on a hit).
    produced_by: str | None = None

    @classmethod
    def of(cls, manifest: Manifest, *, hit: bool) -> StepResult:
        return cls(
            step=manifest.step,
            key=manifest.key,
            hit=hit,
            outputs=manifest.outputs,
            metrics=manifest.metrics,
            duration_s=manifest.duration_s,
            produced_by=f"{manifest.producer.dag_id}/{manifest.producer.run_id}",
        )
