"""Test session set-up: one private Airflow home (metadata DB, dags folder) for the session.

Airflow reads its configuration when first imported, so the environment is set
here, before any test module imports Airflow. Each test still gets its own
artifact store (`store` fixture), so tests never see each other's cache.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_mlpipe.runner import prepare_home

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "dags_examples"
_HOME = Path(tempfile.mkdtemp(prefix="mlpipe-tests-"))
os.environ.update(prepare_home(_HOME, str(_HOME / "store")))
os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"


@pytest.fixture(scope="session")
def airflow_home() -> Iterator[Path]:
    """The session's private Airflow home, with its metadata DB migrated."""
    from airflow_mlpipe.runner import migrate_db

    migrate_db(_HOME, dict(os.environ))
    yield _HOME


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    path.mkdir()
    return path
