"""The wine classifier pipeline as an Airflow DAG: the whole DAG file is these two lines."""

from airflow_mlpipe import load_pipeline

dag = load_pipeline("wine/pipeline.yaml").to_dag()
