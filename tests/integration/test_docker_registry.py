"""Pull policies and registry credentials against a real private registry.

A Docker distribution registry (Debian's `docker-registry`) with basic auth
listens on 127.0.0.1; the Docker Engine treats loopback registries as plain
HTTP. Credentials come from an Airflow connection, as with Airflow's Docker
provider, and must never show in logs, XCom or manifests.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_mlpipe.runner import run_pipeline
from tests.integration.conftest import TEST_IMAGE, unavailable
from tests.integration.helpers import results, write_pipeline

pytestmark = pytest.mark.docker
USER, PASSWORD = "mluser", "pw-4f1c9e-never-log-me"


@dataclass(frozen=True)
class Registry:
    address: str  # host:port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Registry]:
    for tool in ("docker-registry", "htpasswd"):
        if shutil.which(tool) is None:
            unavailable(f"`{tool}` is missing; scripts/apt-install.sh installs it (see scripts/test.sh)")
    root = tmp_path_factory.mktemp("registry")
    htpasswd = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True)
    (root / "htpasswd").write_text(htpasswd.stdout)
    port = _free_port()
    (root / "config.yml").write_text(
        f"version: 0.1\nstorage: {{filesystem: {{rootdirectory: {root / 'data'}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}', secret: test-only}}\n"
        f"auth: {{htpasswd: {{realm: mlpipe-test, path: {root / 'htpasswd'}}}}}\n"
    )
    log = open(root / "registry.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(root / "config.yml")], stdout=log, stderr=log, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    break  # up, and asking for credentials
            except OSError:
                pass
            assert time.monotonic() < deadline, (root / "registry.log").read_text()
            time.sleep(0.2)
        yield Registry(f"127.0.0.1:{port}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        log.close()


@pytest.fixture
def private_image(registry: Registry, docker_client: Any) -> Iterator[str]:
    """A copy of the test image pushed to the private registry, and absent locally."""
    name = f"{registry.address}/mlpipe/private"
    docker_client.images.get(TEST_IMAGE).tag(name, tag="1")
    auth = {"username": USER, "password": PASSWORD}
    for line in docker_client.images.push(name, tag="1", auth_config=auth, stream=True, decode=True):
        assert "error" not in line, line
    docker_client.images.remove(f"{name}:1")
    yield f"{name}:1"
    with contextlib.suppress(Exception):  # absent when the test did not pull it
        docker_client.images.remove(f"{name}:1")


PIPELINE = """
    name: private_registry
    source: steps
    steps:
      hello:
        target: {{kind: docker, image: "{image}", pull: {pull}{conn}}}
        command: [python3, hello.py, "{{{{ outputs.out }}}}"]
        outputs: [out]
"""
HELLO = """
    import sys
    open(sys.argv[1] + "/hello.txt", "w").write("hello")
"""


def spec_for(tmp_path: Path, image: str, pull: str, conn: str | None) -> Path:
    text = PIPELINE.format(image=image, pull=pull, conn=f", docker_conn_id: {conn}" if conn else "")
    return write_pipeline(tmp_path, text, {"hello.py": HELLO})


def test_credentials_from_a_connection_pull_the_image_and_never_leak(
    private_image: str,
    registry: Registry,
    tmp_path: Path,
    store: Path,
    airflow_home: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host, port = registry.address.split(":")
    connection = {"conn_type": "docker", "host": host, "port": int(port), "login": USER, "password": PASSWORD}
    monkeypatch.setenv("AIRFLOW_CONN_PRIVATE_REGISTRY", json.dumps(connection))
    spec = spec_for(tmp_path, private_image, "if_missing", "private_registry")

    report = run_pipeline(spec, conf={}, home=airflow_home, store=str(store), verbose=True)
    logs = "".join(capfd.readouterr())
    assert report.ok, logs[-3000:]
    assert results(report) == {"hello": "miss"}
    assert PASSWORD not in logs
    for manifest in store.rglob("*.json"):
        assert PASSWORD not in manifest.read_text()
    assert PASSWORD not in json.dumps([row.__dict__ for row in report.rows], default=str)

    again = run_pipeline(spec, conf={}, home=airflow_home, store=str(store))
    assert results(again) == {"hello": "hit"}


def test_a_private_image_without_credentials_fails_clearly(
    private_image: str, tmp_path: Path, store: Path, airflow_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    report = run_pipeline(
        spec_for(tmp_path, private_image, "if_missing", None), conf={}, home=airflow_home, store=str(store)
    )
    logs = "".join(capfd.readouterr())
    assert not report.ok
    assert f"could not pull image `{private_image}`" in logs


def test_pull_never_with_a_missing_image_is_not_retried(
    private_image: str, tmp_path: Path, store: Path, airflow_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    report = run_pipeline(
        spec_for(tmp_path, private_image, "never", None), conf={}, home=airflow_home, store=str(store)
    )
    logs = "".join(capfd.readouterr())
    assert not report.ok
    assert "pull policy is `never`" in logs
    assert report.rows[0].state == "upstream_failed"  # the check failed for good; run never started
