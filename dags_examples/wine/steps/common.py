"""Helpers shared by the wine pipeline's steps (part of each step's code snapshot)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def write_split(path: Path, features: np.ndarray, labels: np.ndarray) -> None:
    """Write a split as CSV with a fixed number format, so equal data gives equal bytes."""
    table = np.column_stack([features, labels])
    np.savetxt(path, table, delimiter=",", fmt="%.6g")


def read_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = np.loadtxt(path, delimiter=",", ndmin=2)
    return table[:, :-1], table[:, -1].astype(int)


def write_metrics(metrics: dict[str, float | int | str | bool]) -> None:
    """Report metrics to airflow-mlpipe: it stores them in the manifest and in XCom."""
    target = os.environ.get("MLPIPE_METRICS_FILE")
    if target:
        Path(target).write_text(json.dumps(metrics, sort_keys=True))
