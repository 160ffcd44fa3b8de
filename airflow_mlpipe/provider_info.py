"""Provider metadata read by Airflow through the `apache_airflow_provider` entry point."""

from __future__ import annotations

from typing import Any

from airflow_mlpipe.version import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-mlpipe",
        "name": "ML pipelines (mlpipe)",
        "description": "Compile ML pipelines written in a small DSL (Python or YAML) into Airflow DAGs "
        "with per-step caching; steps run as local processes or in Docker containers.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "mlpipe",
                "external-doc-url": "https://pypi.org/project/airflow-mlpipe/",
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": "mlpipe",
                "python-modules": ["airflow_mlpipe.operators.local", "airflow_mlpipe.operators.docker"],
            }
        ],
        "sensors": [{"integration-name": "mlpipe", "python-modules": ["airflow_mlpipe.sensors.cache_check"]}],
        "extra-links": ["airflow_mlpipe.links.ManifestLink"],
        "config": {
            "mlpipe": {
                "description": "Options of airflow-mlpipe.",
                "options": {
                    "store": {
                        "description": "Root of the artifact store: a directory shared by every worker that "
                        "runs mlpipe steps. Empty means `$AIRFLOW_HOME/mlpipe/store`.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/srv/mlpipe/store",
                        "default": "",
                    },
                    "stat_cache": {
                        "description": "SQLite file remembering content digests of input files by their stat "
                        "signature, so unchanged files are not re-read. Empty means "
                        "`$AIRFLOW_HOME/mlpipe/statcache.sqlite`.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/var/cache/mlpipe/statcache.sqlite",
                        "default": "",
                    },
                    "local_env_passthrough": {
                        "description": "Comma-separated globs of worker environment variables that local steps "
                        "inherit; all others are dropped so Airflow's secrets never reach a step.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "PATH,HOME,LANG,LC_*,TZ,TMPDIR,OPENBLAS_*,OMP_*,MKL_*",
                        "default": "",
                    },
                    "docker_user": {
                        "description": "uid:gid a Docker step runs as when the worker is root and the step "
                        "sets no `user` (a non-root worker runs containers as itself).",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "65532:65532",
                        "default": "65532:65532",
                    },
                    "docker_env_passthrough": {
                        "description": "Comma-separated globs of worker environment variables passed into "
                        "Docker steps (CPU-library tuning only by default); nothing else of the worker's "
                        "environment reaches a container.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "OPENBLAS_*,OMP_*,MKL_*",
                        "default": "OPENBLAS_*,OMP_*,MKL_*",
                    },
                },
            }
        },
    }
