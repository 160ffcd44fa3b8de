"""Small helpers shared by the integration tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

from airflow_mlpipe.runner import RunReport


def results(report: RunReport) -> dict[str, str]:
    """Step -> `hit` / `miss` / `-`."""
    return {row.step: row.cache for row in report.rows}


def manifests(store: Path) -> set[Path]:
    return set((store / "manifests").rglob("*.json"))


def write_pipeline(root: Path, yaml_text: str, scripts: dict[str, str]) -> Path:
    """A pipeline.yaml and its step scripts under `root/steps`, dedented."""
    (root / "steps").mkdir(parents=True, exist_ok=True)
    for name, body in scripts.items():
        (root / "steps" / name).write_text(textwrap.dedent(body))
    spec = root / "pipeline.yaml"
    spec.write_text(textwrap.dedent(yaml_text))
    return spec
