"""Access to a Docker Engine: client, registry login, image resolution, orphan clean-up.

`docker` (the SDK) is imported only here and only when a method runs, so
compiling a pipeline never needs it.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_mlpipe.exceptions import MlpipeError

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container
    from docker.models.images import Image

#: Seconds the client waits for the daemon's answer to one API call.
API_TIMEOUT = 120


class ImageUnavailable(MlpipeError):
    """The image is not local and may not (or could not) be pulled."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class DockerEngine:
    """One daemon, addressed by `base_url` (default `DOCKER_HOST` or the local socket)."""

    def __init__(self, base_url: str | None = None, conn_id: str | None = None) -> None:
        self.explicit_url = base_url is not None
        self.base_url = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        self.conn_id = conn_id

    def _connect(self, timeout: int | None, version: str | None = None) -> DockerClient:
        import docker

        if self.explicit_url:
            return docker.DockerClient(base_url=self.base_url, timeout=timeout, version=version)
        # Honours DOCKER_HOST and DOCKER_TLS_VERIFY / DOCKER_CERT_PATH, like the docker CLI.
        return docker.from_env(timeout=timeout, version=version)

    def streaming_client(self) -> DockerClient:
        """A second connection without a read timeout, for following a quiet log for hours."""
        return self._connect(timeout=None, version=self.client.api.api_version)

    @cached_property
    def client(self) -> DockerClient:
        import docker

        try:
            client = self._connect(API_TIMEOUT)
            client.ping()
        except docker.errors.DockerException as exc:
            raise MlpipeError(
                f"cannot reach the Docker daemon at `{self.base_url}`: {exc}; start it, or set `docker_url` "
                "in the step's target (or DOCKER_HOST on the worker)"
            ) from exc
        return client

    def login(self) -> None:
        """Log in to the registry of the `docker_conn_id` connection, as Airflow's Docker provider does."""
        if not self.conn_id:
            return
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(self.conn_id)
        if not conn.host or not conn.login:
            raise MlpipeError(f"connection `{self.conn_id}` needs a host (the registry) and a login")
        import docker

        registry = f"{conn.host}:{conn.port}" if conn.port else conn.host
        # The SDK keeps the credentials in memory for later pulls; nothing is logged.
        try:
            self.client.login(username=conn.login, password=conn.password, registry=registry, reauth=True)
        except docker.errors.APIError as exc:
            raise ImageUnavailable(
                f"login to registry `{registry}` with connection `{self.conn_id}` failed: {exc.explanation}",
                retryable=exc.is_server_error(),
            ) from None

    def resolve_image(self, image: str, pull: str) -> Image:
        """The local image for `image` under the pull policy; its `.id` identifies the content."""
        import docker

        if pull != "always":
            try:
                return self.client.images.get(image)
            except docker.errors.ImageNotFound:
                if pull == "never":
                    raise ImageUnavailable(
                        f"image `{image}` is not on the Docker host and the pull policy is `never`; "
                        "build or load it there, or set `pull: if_missing`",
                        retryable=False,
                    ) from None
        self.login()
        try:
            return self.client.images.pull(image if ":" in image.rsplit("/", 1)[-1] else f"{image}:latest")
        except docker.errors.NotFound as exc:
            raise ImageUnavailable(f"image `{image}` does not exist in its registry: {exc}", retryable=False) from exc
        except docker.errors.APIError as exc:
            raise ImageUnavailable(f"could not pull image `{image}`: {exc}", retryable=True) from exc

    def containers_labelled(self, labels: dict[str, str]) -> list[Container]:
        filters: dict[str, Any] = {"label": [f"{k}={v}" for k, v in labels.items()]}
        return list(self.client.containers.list(all=True, filters=filters))
