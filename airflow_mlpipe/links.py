"""Operator extra links: from a step's tasks in the Airflow UI to its stored result.

Targets add their own by extending `operator_extra_links` (a VM target would add
its instance console next to the manifest).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

from airflow_mlpipe.runtime import XCOM_KEY

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: Where the API-server plugin (`airflow_mlpipe.plugins`) serves manifests.
MANIFEST_ROUTE = "mlpipe/dags/{dag_id}/manifests/{key}"


def manifest_url(base_url: str, dag_id: str, key: str) -> str:
    return base_url.rstrip("/") + "/" + MANIFEST_ROUTE.format(dag_id=dag_id, key=key)


class ManifestLink(BaseOperatorLink):
    """The manifest of the result this task computed or found: key, inputs, outputs, metrics, lineage."""

    name = "Manifest"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        # Computed on the worker when the task finishes; the UI reads the stored link.
        from airflow.sdk import conf
        from airflow.sdk.bases.xcom import BaseXCom

        result: Any = BaseXCom.get_value(ti_key=ti_key, key=XCOM_KEY)  # type: ignore[arg-type]
        if not isinstance(result, dict) or not result.get("key"):
            return ""
        base_url = conf.get("api", "base_url", fallback="http://localhost:8080/")
        return manifest_url(base_url, ti_key.dag_id, result["key"])
