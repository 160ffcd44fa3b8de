"""A store in a local (or shared POSIX) directory.

Layout under the root::

    objects/ab/<digest>/...      committed outputs, read-only, named by content
    manifests/ab/<key>.json      one per computed cache key
    refs/<pipeline>/<step>.json  the latest key of each step (for "what changed")
    staging/<step>-<output>-<uuid>/  outputs being written; never read as results
    leases/<key>.json            who is computing a key right now

Commits are renames within one file system, and a manifest is written with
write-to-temp + `os.replace`, so a crash leaves either nothing or a complete result.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pydantic import ValidationError

from airflow_mlpipe.exceptions import StoreError
from airflow_mlpipe.fingerprint import hash_tree
from airflow_mlpipe.manifest import Manifest, OutputRecord
from airflow_mlpipe.store.base import ArtifactStore, Lease

#: Staging dirs untouched this long belong to attempts that died.
STALE_STAGING = timedelta(days=2)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _make_read_only(root: Path, *, keep_top: bool = False) -> None:
    """Committed outputs are immutable: a step that writes into its input fails loudly.

    `keep_top` leaves `root` itself writable: renaming a directory to a new parent
    rewrites its `..` entry, which a non-root owner may not do in a read-only folder.
    """
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                p.chmod(stat.S_IMODE(p.stat().st_mode) & ~0o222)
    for dirpath, _, _ in os.walk(root, topdown=False):
        p = Path(dirpath)
        if not (keep_top and p == root):
            p.chmod(stat.S_IMODE(p.stat().st_mode) & ~0o222)


class LocalStore(ArtifactStore):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    # -- manifests -------------------------------------------------------------
    def _manifest_path(self, key: str) -> Path:
        return self.root / "manifests" / key[:2] / f"{key}.json"

    def get(self, key: str) -> Manifest | None:
        path = self._manifest_path(key)
        try:
            return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValidationError, ValueError) as exc:
            raise StoreError(f"manifest `{path}` is unreadable: {exc}; delete it to recompute the step") from exc

    def put(self, manifest: Manifest) -> None:
        if not self.outputs_exist(manifest):
            raise StoreError(f"refusing to write manifest `{manifest.key}`: its outputs are not committed")
        _atomic_write(self._manifest_path(manifest.key), manifest.model_dump_json(indent=2))

    def outputs_exist(self, manifest: Manifest, *, verify: bool = False) -> bool:
        for out in manifest.outputs.values():
            path = self._object_path(out.digest)
            if not path.is_dir():
                return False
            if verify and hash_tree(path).digest != out.digest:
                return False
        return True

    # -- outputs ---------------------------------------------------------------
    def _object_path(self, digest: str) -> Path:
        return self.root / "objects" / digest[:2] / digest

    def new_staging(self, label: str) -> Path:
        path = self.root / "staging" / f"{label}-{uuid.uuid4().hex}"
        path.mkdir(parents=True)
        return path

    def remove_stale_staging(self, older_than: timedelta = STALE_STAGING) -> int:
        """Delete staging dirs a killed worker left behind (never results, only litter)."""
        cutoff = time.time() - older_than.total_seconds()
        removed = 0
        for path in (self.root / "staging").glob("*"):
            try:
                if path.stat().st_mtime < cutoff:
                    _make_writable(path)
                    shutil.rmtree(path)
                    removed += 1
            except OSError:
                continue  # another worker removed it, or it is not ours to remove
        return removed

    def commit_output(self, staging: Path) -> OutputRecord:
        tree = hash_tree(staging)
        final = self._object_path(tree.digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(staging)  # same content is already stored
        else:
            _make_read_only(staging, keep_top=True)
            try:
                os.rename(staging, final)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # Another task committed identical content a moment ago.
                _make_writable(staging)
                shutil.rmtree(staging)
            else:
                final.chmod(stat.S_IMODE(final.stat().st_mode) & ~0o222)
        return OutputRecord(digest=tree.digest, uri=str(final), size=tree.size, files=len(tree.files))

    def local_path(self, output: OutputRecord) -> Path:
        return self._object_path(output.digest)

    # -- leases ----------------------------------------------------------------
    def _lease_path(self, key: str) -> Path:
        return self.root / "leases" / f"{key}.json"

    def _read_lease(self, key: str) -> Lease | None:
        try:
            data = json.loads(self._lease_path(key).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return Lease(
            key=key,
            owner=data["owner"],
            expires=datetime.fromisoformat(data["expires"]),
            hostname=data["hostname"],
            pid=int(data["pid"]),
        )

    def acquire_lease(self, key: str, owner: str, ttl: timedelta) -> Lease | None:
        lease = Lease(
            key=key,
            owner=owner,
            expires=datetime.now(timezone.utc) + ttl,
            hostname=socket.gethostname(),
            pid=os.getpid(),
        )
        body = json.dumps(
            {"owner": owner, "expires": lease.expires.isoformat(), "hostname": lease.hostname, "pid": lease.pid}
        )
        path = self._lease_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write the whole lease aside, then link it into place: link fails if a lease
        # exists, and a reader never sees a half-written one.
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        tmp.write_text(body, encoding="utf-8")
        try:
            for _ in range(2):
                try:
                    os.link(tmp, path)
                    return lease
                except FileExistsError:
                    current = self._read_lease(key)
                    if current is not None and current.is_live():
                        return None
                    # Stale (expired, or its process is gone): break it once and retry.
                    path.unlink(missing_ok=True)
            return None
        finally:
            tmp.unlink(missing_ok=True)

    def release_lease(self, lease: Lease) -> None:
        current = self._read_lease(lease.key)
        if current is not None and current.owner == lease.owner:
            self._lease_path(lease.key).unlink(missing_ok=True)

    def lease_holder(self, key: str) -> Lease | None:
        lease = self._read_lease(key)
        return lease if lease is not None and lease.is_live() else None

    # -- refs ------------------------------------------------------------------
    def _ref_path(self, pipeline: str, step: str) -> Path:
        return self.root / "refs" / pipeline / f"{step}.json"

    def latest(self, pipeline: str, step: str) -> Manifest | None:
        try:
            key = json.loads(self._ref_path(pipeline, step).read_text(encoding="utf-8"))["key"]
        except (FileNotFoundError, ValueError, KeyError):
            return None
        return self.get(key)

    def set_latest(self, manifest: Manifest) -> None:
        _atomic_write(self._ref_path(manifest.pipeline, manifest.step), json.dumps({"key": manifest.key}))


def _make_writable(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        Path(dirpath).chmod(0o755)
        for name in filenames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                p.chmod(0o644)
