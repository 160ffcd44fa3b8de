"""The provider's `[mlpipe]` configuration section (also `AIRFLOW__MLPIPE__*` env vars)."""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

from airflow_mlpipe.exceptions import MlpipeError


def _airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser()


def _get(key: str) -> str | None:
    env = os.environ.get(f"AIRFLOW__MLPIPE__{key.upper()}")
    if env:
        return env
    from airflow.sdk import conf

    value = conf.get("mlpipe", key, fallback=None)
    return value or None


def store_uri() -> str:
    """Root of the artifact store; default `$AIRFLOW_HOME/mlpipe/store`."""
    return _get("store") or str(_airflow_home() / "mlpipe" / "store")


def stat_cache_path() -> Path:
    """Where file digests are remembered by stat signature (per worker machine)."""
    value = _get("stat_cache")
    return Path(value).expanduser() if value else _airflow_home() / "mlpipe" / "statcache.sqlite"


def env_passthrough() -> tuple[str, ...]:
    """Worker environment variables a local step inherits (globs); everything else is dropped."""
    value = _get("local_env_passthrough")
    if value:
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return ("PATH", "HOME", "LANG", "LC_*", "TZ", "TMPDIR", "OPENBLAS_*", "OMP_*", "MKL_*")


def passthrough_env(patterns: tuple[str, ...]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}


def docker_user() -> str:
    """uid:gid a container runs as when the worker is root and the step sets no `user`."""
    value = _get("docker_user") or "65532:65532"
    if not re.fullmatch(r"[1-9]\d*:\d+", value):
        raise MlpipeError(f"`[mlpipe] docker_user = {value}` must be a numeric non-root `uid:gid`, e.g. `65532:65532`")
    return value


def docker_env_passthrough() -> tuple[str, ...]:
    """Worker variables passed into containers: only CPU-library tuning by default."""
    value = _get("docker_env_passthrough")
    if value:
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return ("OPENBLAS_*", "OMP_*", "MKL_*")
