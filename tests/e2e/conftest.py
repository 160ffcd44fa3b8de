"""End-to-end fixtures: one real Airflow stack (api-server, scheduler, dag-processor,
triggerer) for the session, parsing a copy of dags_examples/.

The stack needs the Docker Engine and the example image (the `wine_classifier` DAG runs its
steps in containers): without them the tests skip, or fail under CI=true.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES
from tests.e2e.stack import AirflowStack
from tests.integration.conftest import docker_client, unavailable

__all__ = ["airflow_stack", "docker_client", "unavailable"]

E2E_DIR = Path(__file__).resolve().parent
#: The example DAGs the stack must have parsed before any test runs.
EXAMPLE_DAG_IDS = ("wine_classifier", "wine_classifier_python")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def airflow_stack(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    """The session's started stack (all example DAGs parsed, all paused); always stopped."""
    root = tmp_path_factory.mktemp("airflow-stack")
    dags = root / "dags"
    shutil.copytree(EXAMPLES, dags, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    stack = AirflowStack(root, dags, root / "store")
    started = time.monotonic()
    try:
        stack.start(dag_ids=EXAMPLE_DAG_IDS)
        print(f"\n[e2e] Airflow stack up on {stack.base_url} in {time.monotonic() - started:.1f}s {stack.timings}")
        yield stack
    finally:
        stack.stop()
