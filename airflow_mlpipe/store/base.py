"""The artifact store interface: manifests by cache key, outputs by content digest, leases."""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow_mlpipe.durations import format_duration
from airflow_mlpipe.manifest import Manifest, OutputRecord


@dataclass(frozen=True)
class Lease:
    """A claim that one task is computing a key right now, so others wait instead."""

    key: str
    owner: str
    expires: datetime
    hostname: str
    pid: int

    def is_live(self, now: datetime | None = None) -> bool:
        now = now or datetime.now(timezone.utc)
        if now >= self.expires:
            return False
        if self.hostname == socket.gethostname():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
        return True


class ArtifactStore(ABC):
    """Where results live. A manifest is written only after all its outputs are committed."""

    @abstractmethod
    def get(self, key: str) -> Manifest | None:
        """The manifest for `key`, or None."""

    @abstractmethod
    def put(self, manifest: Manifest) -> None:
        """Write the manifest atomically; its outputs must already be committed."""

    @abstractmethod
    def outputs_exist(self, manifest: Manifest, *, verify: bool = False) -> bool:
        """Cheap existence check of every output; `verify` re-hashes the content."""

    def exists(self, key: str, *, verify: bool = False) -> bool:
        manifest = self.get(key)
        return manifest is not None and self.outputs_exist(manifest, verify=verify)

    def unusable(self, manifest: Manifest, *, max_age: timedelta | None, verify: bool) -> str | None:
        """Why a stored result may not be reused (None: it may). One rule for checks and runs."""
        if max_age is not None and datetime.now(timezone.utc) - manifest.finished_at > max_age:
            return f"the cached result is older than `max_age` ({format_duration(max_age)})"
        if not self.outputs_exist(manifest, verify=verify):
            return "the cached outputs are missing or changed in the store"
        return None

    @abstractmethod
    def new_staging(self, label: str) -> Path:
        """A fresh, empty directory for a step to write one output into."""

    def remove_stale_staging(self, older_than: timedelta = timedelta(days=2)) -> int:
        """Delete staging areas left by dead attempts; returns how many (stores may no-op)."""
        return 0

    @abstractmethod
    def commit_output(self, staging: Path) -> OutputRecord:
        """Move a finished staging directory into content-addressed storage."""

    @abstractmethod
    def local_path(self, output: OutputRecord) -> Path:
        """A local directory holding the output's files (downloaded first if remote)."""

    @abstractmethod
    def acquire_lease(self, key: str, owner: str, ttl: timedelta) -> Lease | None:
        """Claim `key`; None when another live owner holds it."""

    @abstractmethod
    def release_lease(self, lease: Lease) -> None: ...

    @abstractmethod
    def lease_holder(self, key: str) -> Lease | None:
        """The live lease on `key`, if any."""

    @abstractmethod
    def latest(self, pipeline: str, step: str) -> Manifest | None:
        """The most recently committed manifest of a step (to explain misses)."""

    @abstractmethod
    def set_latest(self, manifest: Manifest) -> None: ...
