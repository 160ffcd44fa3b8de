"""Content fingerprints: files, directory trees, and the execution environment.

BLAKE3 (multi-GB/s) over content, never mtimes or absolute paths. A stat cache
remembers digests of files whose (size, mtime, inode, ctime) did not change, so
an unchanged multi-GB input is not re-read at every run.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import blake3

from airflow_mlpipe.exceptions import InputMissing

_MMAP_THRESHOLD = 1 << 20
#: A file modified this recently may change again within the same mtime tick:
#: hash it, but do not trust its stat signature yet (git calls this "racy").
_RACY_NS = 2_000_000_000


class StatCache:
    """Digest cache keyed by a file's stat signature; sqlite so parallel tasks can share it."""

    def __init__(self, path: Path | None = None) -> None:
        self._mem: dict[tuple[str, tuple[int, ...]], str] = {}
        self._pending: list[tuple[str, str, str]] = []
        self._db: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, sig TEXT NOT NULL, digest TEXT NOT NULL)"
            )

    @staticmethod
    def signature(st: os.stat_result) -> tuple[int, ...]:
        return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, st.st_dev)

    def get(self, path: str, sig: tuple[int, ...]) -> str | None:
        hit = self._mem.get((path, sig))
        if hit is None and self._db is not None:
            row = self._db.execute("SELECT sig, digest FROM digests WHERE path = ?", (path,)).fetchone()
            if row and row[0] == json.dumps(sig):
                hit = row[1]
        return hit

    def put(self, path: str, sig: tuple[int, ...], digest: str) -> None:
        self._mem[(path, sig)] = digest
        if self._db is not None:
            self._pending.append((path, json.dumps(sig), digest))

    def flush(self) -> None:
        """Write new digests in one transaction (one commit per file would dominate small trees)."""
        if self._db is not None and self._pending:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT OR REPLACE INTO digests (path, sig, digest) VALUES (?, ?, ?)", self._pending
                )
            self._pending.clear()

    def close(self) -> None:
        if self._db is not None:
            self.flush()
            self._db.close()
            self._db = None


def hash_bytes(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def hash_file(path: Path, cache: StatCache | None = None) -> str:
    st = path.stat()
    key = str(path.resolve())
    sig = StatCache.signature(st)
    if cache is not None and (hit := cache.get(key, sig)):
        return hit
    if st.st_size >= _MMAP_THRESHOLD:
        digest = blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap(path).hexdigest()
    else:
        digest = blake3.blake3(path.read_bytes()).hexdigest()
    if cache is not None and time.time_ns() - st.st_mtime_ns > _RACY_NS:
        cache.put(key, sig, digest)
    return digest


@lru_cache(maxsize=512)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """gitignore-like: `**` spans folders, `*` stays in one; no `/` means any depth."""
    pat = pattern.strip().rstrip("/")
    anchored = "/" in pat
    pat = pat.lstrip("/")
    out = []
    i = 0
    while i < len(pat):
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pat.startswith("**", i):
            out.append(".*")
            i += 2
        elif pat[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pat[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pat[i]))
            i += 1
    body = "".join(out)
    # A pattern naming a folder selects everything below it.
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(f"^{prefix}{body}(?:/.*)?$")


def matches(rel: str, patterns: Iterable[str]) -> bool:
    return any(_glob_regex(p).match(rel) for p in patterns)


@dataclass(frozen=True)
class TreeDigest:
    """The content of a directory (or a single file): digest, file digests, size."""

    digest: str
    files: dict[str, str] = field(default_factory=dict)
    size: int = 0


def _walk(root: Path, ignore: tuple[str, ...]) -> Iterator[tuple[str, Path]]:
    """Files under `root` in sorted order. Symlinks are followed (their content is what a
    step reads), each real folder once, so a link cycle cannot loop."""
    seen = {os.path.realpath(root)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        base = Path(dirpath)
        rel_dir = base.relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        keep = []
        for d in sorted(dirnames):
            real = os.path.realpath(base / d)
            if matches(rel_dir + d, ignore) or real in seen:
                continue
            seen.add(real)
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            rel = rel_dir + name
            if not matches(rel, ignore):
                yield rel, base / name


def hash_tree(
    root: Path,
    *,
    include: Iterable[str] = ("**",),
    exclude: Iterable[str] = (),
    ignore: Iterable[str] = (),
    cache: StatCache | None = None,
) -> TreeDigest:
    """Digest of the files under `root` selected by the globs; a file root digests itself."""
    if not root.exists():
        raise InputMissing(f"`{root}` does not exist")
    if root.is_file():
        digest = hash_file(root, cache)
        return TreeDigest(digest=digest, files={root.name: digest}, size=root.stat().st_size)
    include, exclude = tuple(include), tuple(exclude)
    files: dict[str, str] = {}
    lines: list[str] = []
    size = 0
    for rel, path in _walk(root, tuple(ignore)):
        if not matches(rel, include) or matches(rel, exclude):
            continue
        try:
            st = path.stat()
        except FileNotFoundError:
            # A dangling link: its target text is all there is to hash.
            digest, mode = hash_bytes(b"dangling-link:" + os.readlink(path).encode()), "l"
        else:
            if not stat.S_ISREG(st.st_mode):
                continue
            digest, mode = hash_file(path, cache), "x" if st.st_mode & 0o111 else "f"
            size += st.st_size
        files[rel] = digest
        lines.append(f"{rel}\0{mode}\0{digest}\n")
    tree = blake3.blake3(b"mlpipe-tree-v1\n")
    for line in lines:
        tree.update(line.encode())
    return TreeDigest(digest=tree.hexdigest(), files=files, size=size)


_ENV_PROBE = (
    "import importlib.metadata as m, platform\n"
    "result = {'python': platform.python_implementation() + ' ' + platform.python_version(),"
    " 'machine': platform.machine(), 'packages': sorted({(d.metadata['Name'] or '').lower() + '=='"
    " + d.version for d in m.distributions()})}\n"
)


@lru_cache(maxsize=8)
def python_environment(interpreter: str) -> dict[str, object]:
    """Interpreter version, machine and installed distributions of a Python environment."""
    if interpreter == sys.executable:
        namespace: dict[str, object] = {}
        exec(_ENV_PROBE, namespace)  # noqa: S102 - our own constant probe
        return namespace["result"]  # type: ignore[return-value]
    probe = _ENV_PROBE + "import json; print(json.dumps(result))"
    out = subprocess.run([interpreter, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def local_environment_identity(interpreter: str, packages: Iterable[str] | None) -> str:
    """Digest naming the interpreter and the distributions a local step depends on."""
    env = python_environment(interpreter)
    installed: list[str] = list(env["packages"])  # type: ignore[call-overload]
    if packages is not None:
        wanted = {_normalise(p) for p in packages}
        installed = [p for p in installed if _normalise(p.split("==")[0]) in wanted]
    payload = {"python": env["python"], "machine": env["machine"], "packages": installed}
    return "local:" + hash_bytes(json.dumps(payload, sort_keys=True).encode())[:32]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
