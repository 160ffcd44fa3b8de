"""airflow-mlpipe: ML pipelines as Airflow DAGs, with per-step caching.

Exports resolve lazily, so `import airflow_mlpipe` stays cheap and pulls in
neither Airflow's operators nor `docker`/`boto3` until they are used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from airflow_mlpipe.version import __version__

if TYPE_CHECKING:
    from airflow_mlpipe.compiler import compile_pipeline
    from airflow_mlpipe.exceptions import MlpipeError, SpecError, StepFailed
    from airflow_mlpipe.loader import load_pipeline
    from airflow_mlpipe.operators.docker import DockerStepOperator
    from airflow_mlpipe.operators.local import LocalStepOperator
    from airflow_mlpipe.provider_info import get_provider_info
    from airflow_mlpipe.sensors.cache_check import CacheCheckSensor
    from airflow_mlpipe.spec import (
        CachePolicy,
        DockerTarget,
        External,
        LocalTarget,
        OutputSpec,
        ParamSpec,
        Pipeline,
        SourceSpec,
        Step,
    )
    from airflow_mlpipe.store import LocalStore

_EXPORTS = {
    "Pipeline": "spec",
    "Step": "spec",
    "ParamSpec": "spec",
    "External": "spec",
    "OutputSpec": "spec",
    "SourceSpec": "spec",
    "LocalTarget": "spec",
    "DockerTarget": "spec",
    "CachePolicy": "spec",
    "load_pipeline": "loader",
    "compile_pipeline": "compiler",
    "MlpipeError": "exceptions",
    "SpecError": "exceptions",
    "StepFailed": "exceptions",
    "LocalStore": "store",
    "CacheCheckSensor": "sensors.cache_check",
    "LocalStepOperator": "operators.local",
    "DockerStepOperator": "operators.docker",
    "get_provider_info": "provider_info",
}

__all__ = [  # noqa: RUF022 - grouped like _EXPORTS
    "__version__",
    "Pipeline",
    "Step",
    "ParamSpec",
    "External",
    "OutputSpec",
    "SourceSpec",
    "LocalTarget",
    "DockerTarget",
    "CachePolicy",
    "load_pipeline",
    "compile_pipeline",
    "MlpipeError",
    "SpecError",
    "StepFailed",
    "LocalStore",
    "CacheCheckSensor",
    "LocalStepOperator",
    "DockerStepOperator",
    "get_provider_info",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'airflow_mlpipe' has no attribute {name!r}")
    value = getattr(import_module(f"airflow_mlpipe.{module}"), name)
    globals()[name] = value
    return value
