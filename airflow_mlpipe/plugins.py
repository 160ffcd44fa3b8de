"""An Airflow plugin for the API server: serves step manifests for the `Manifest` extra link.

Access follows Airflow's own rules: a user who may read the DAG may read its manifests.
"""

from __future__ import annotations

import re
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException

_KEY = re.compile(r"^[0-9a-f]{64}$")


def create_app() -> FastAPI:
    from airflow.api_fastapi.core_api.security import requires_access_dag

    app = FastAPI(title="airflow-mlpipe", description="Manifests of cached pipeline steps.")

    @app.get("/dags/{dag_id}/manifests/{key}", dependencies=[Depends(requires_access_dag(method="GET"))])
    def manifest(dag_id: str, key: str) -> dict[str, Any]:
        from airflow_mlpipe.store import get_store

        if not _KEY.match(key):
            raise HTTPException(status_code=400, detail="a manifest key is 64 hexadecimal characters")
        found = get_store().get(key)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no manifest for key {key} in the artifact store (yet)")
        return found.model_dump(mode="json")

    return app


class MlpipePlugin(AirflowPlugin):
    name = "mlpipe"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/mlpipe", "name": "mlpipe manifests"}]  # noqa: RUF012
