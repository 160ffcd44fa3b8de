"""Fixtures for parts that must really run: the Docker Engine and its local images."""

from __future__ import annotations

import os
from typing import Any, NoReturn

import pytest

TEST_IMAGE = "mlpipe-test:latest"
EXAMPLE_IMAGE = "mlpipe-example:latest"


def unavailable(message: str) -> NoReturn:
    """Under CI a missing part is a failure, never a silent skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def docker_client() -> Any:
    try:
        import docker

        client = docker.from_env()
        client.ping()
        for image in (TEST_IMAGE, EXAMPLE_IMAGE):
            client.images.get(image)
    except Exception as exc:
        unavailable(
            f"Docker engine or test images unavailable ({exc}); "
            "run scripts/docker-engine.sh and scripts/build-images.sh"
        )
    return client
