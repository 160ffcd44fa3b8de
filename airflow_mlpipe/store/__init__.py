"""Artifact stores. `get_store()` returns the one configured in `[mlpipe] store`."""

from __future__ import annotations

from airflow_mlpipe.config import store_uri
from airflow_mlpipe.store.base import ArtifactStore, Lease
from airflow_mlpipe.store.local import LocalStore

__all__ = ["ArtifactStore", "Lease", "LocalStore", "get_store"]


def get_store(uri: str | None = None) -> ArtifactStore:
    """The store at `uri` (a local path), or the configured one."""
    uri = uri or store_uri()
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if "://" in uri:
        raise ValueError(f"unsupported artifact store `{uri}`: only local paths are supported so far")
    return LocalStore(uri)
