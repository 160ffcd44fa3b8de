"""Pipeline -> DAG compilation: structure, params, scheduling, task settings, purity.

Nothing here executes a task: DAGs are only built (and serialized, as the DAG
processor would) and inspected.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from airflow.sdk import DAG, Param, TaskGroup, TriggerRule
from airflow.sdk.definitions.param import ParamsDict, process_params
from airflow.sdk.exceptions import ParamValidationError
from airflow.serialization.serialized_objects import DagSerialization

from airflow_mlpipe import External, ParamSpec, Pipeline, SpecError, Step, compile_pipeline, load_pipeline
from airflow_mlpipe.operators.docker import DockerStepOperator
from airflow_mlpipe.operators.local import LocalStepOperator
from airflow_mlpipe.sensors.cache_check import CacheCheckSensor

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WINE = ROOT / "dags_examples" / "wine" / "pipeline.yaml"
WINE_STEPS = ("prepare", "train", "evaluate", "register")
#: Step -> the steps it consumes data from, as written in the example YAML.
WINE_DEPS = {
    "prepare": set(),
    "train": {"prepare"},
    "evaluate": {"train", "prepare"},
    "register": {"train", "evaluate"},
}
WINE_TASKS = [f"{step}.{kind}" for step in WINE_STEPS for kind in ("check", "run")]


@pytest.fixture(scope="module")
def wine_dag() -> DAG:
    return load_pipeline(WINE).to_dag()


def structure(dag: DAG) -> list[tuple[str, list[str]]]:
    """Task ids in DAG order, each with its sorted upstream task ids."""
    return [(t.task_id, sorted(t.upstream_task_ids)) for t in dag.tasks]


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# -- a pipeline built with the Python API ------------------------------------------
def python_pipeline(base_dir: Path | None, **overrides: object) -> Pipeline:
    """prepare -> train -> evaluate, plus `publish` ordered after `evaluate` only.

    Declared out of order (train first) to show the DAG follows the graph, not the list.
    """
    prepare = Step(
        name="prepare",
        command=["python", "prepare.py", "--raw", "{{ inputs.raw }}", "--out", "{{ outputs.dataset }}"],
        inputs={"raw": External(path="data/raw-{{ run_date }}.csv")},
        outputs=["dataset"],
        params=["seed"],
    )
    train = Step(
        name="train",
        description="Fits the model.",
        command=["python", "train.py", "{{ inputs.dataset }}", "{{ params.lr }}", "{{ outputs.model }}"],
        inputs={"dataset": prepare.output("dataset")},
        outputs=["model"],
        retries=3,
        retry_delay="2m",
        timeout="1h",
        pool="gpu_pool",
        queue="gpu_queue",
    )
    evaluate = Step(
        name="evaluate",
        command=["python", "evaluate.py", "{{ inputs.model }}", "{{ inputs.data }}", "{{ outputs.report }}"],
        inputs={"model": train.output("model"), "data": prepare.output("dataset")},
        outputs=["report"],
    )
    publish = Step(name="publish", command=["python", "publish.py", "{{ params.kind }}"], after=["evaluate"])
    fields: dict[str, object] = {
        "name": "py_pipeline",
        "description": "A pipeline from Python.\nSecond line.",
        "params": {
            "seed": ParamSpec(type="integer", default=7, description="Split seed."),
            "lr": ParamSpec(type="number", default=0.1, minimum=0, maximum=1, description="Learning rate."),
            "kind": ParamSpec(type="string", default="rf", enum=("rf", "gbm"), title="Model kind"),
        },
        "steps": [train, prepare, publish, evaluate],
        "source": "src",
        "base_dir": base_dir,
    }
    fields.update(overrides)
    return Pipeline(**fields)  # type: ignore[arg-type]


# -- structure of the example ---------------------------------------------------------
def test_example_compiles_to_one_group_per_step(wine_dag: DAG) -> None:
    assert isinstance(wine_dag, DAG)
    assert wine_dag.dag_id == "wine_classifier"
    assert list(wine_dag.task_group.children) == list(WINE_STEPS)
    for step in WINE_STEPS:
        group = wine_dag.task_group.children[step]
        assert isinstance(group, TaskGroup)
        assert sorted(group.children) == [f"{step}.check", f"{step}.run"]
        assert isinstance(wine_dag.get_task(f"{step}.check"), CacheCheckSensor)
        assert isinstance(wine_dag.get_task(f"{step}.run"), DockerStepOperator)
    assert wine_dag.task_ids == WINE_TASKS
    assert len(wine_dag.tasks) == 8


def test_example_dependencies_and_trigger_rules(wine_dag: DAG) -> None:
    for step, ups in WINE_DEPS.items():
        check = wine_dag.get_task(f"{step}.check")
        run = wine_dag.get_task(f"{step}.run")
        assert check.upstream_task_ids == {f"{up}.run" for up in ups}, step
        assert check.trigger_rule == TriggerRule.NONE_FAILED
        assert run.upstream_task_ids == {f"{step}.check"}, step
        assert run.trigger_rule == TriggerRule.ALL_SUCCESS
        # Nothing downstream hangs off a check except its own run.
        assert check.downstream_task_ids == {f"{step}.run"}
    assert wine_dag.get_task("register.run").downstream_task_ids == set()


def test_compile_is_stable(wine_dag: DAG) -> None:
    again = load_pipeline(WINE).to_dag()
    assert structure(again) == structure(wine_dag)
    assert [t.task_id for t in again.topological_sort()] == [t.task_id for t in wine_dag.topological_sort()]
    # What the DAG processor stores (and hashes to detect changes) is identical too.
    assert DagSerialization.to_dict(again) == DagSerialization.to_dict(wine_dag)


def test_compile_is_stable_across_hash_seeds(wine_dag: DAG) -> None:
    code = textwrap.dedent(
        f"""
        import json
        from airflow.serialization.serialized_objects import DagSerialization
        from airflow_mlpipe import load_pipeline
        dag = load_pipeline({str(WINE)!r}).to_dag()
        print(json.dumps({{
            "tasks": [[t.task_id, sorted(t.upstream_task_ids)] for t in dag.tasks],
            "topo": [t.task_id for t in dag.topological_sort()],
            "serialized": DagSerialization.to_dict(dag),
        }}, sort_keys=True, default=str))
        """
    )
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR"}
        proc = subprocess.run(
            [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        outputs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert outputs[0] == outputs[1]
    assert [tuple(t) for t in outputs[0]["tasks"]] == [(tid, ups) for tid, ups in structure(wine_dag)]


# -- params --------------------------------------------------------------------------
def test_params_become_airflow_params(wine_dag: DAG) -> None:
    params = wine_dag.params
    assert isinstance(params, ParamsDict)
    assert list(params) == [
        "test_size",
        "seed",
        "n_estimators",
        "max_depth",
        "min_accuracy",
        "model_name",
        "force_rerun",
    ]
    for name in params:
        assert isinstance(params.get_param(name), Param)

    test_size = params.get_param("test_size")
    assert test_size.value == 0.25
    assert test_size.description == "Fraction of the day's snapshot held out for evaluation."
    assert test_size.schema["type"] == "number"
    assert test_size.schema["minimum"] == 0.1
    assert test_size.schema["maximum"] == 0.5

    seed = params.get_param("seed")
    assert (seed.value, seed.schema["type"]) == (7, "integer")
    assert "minimum" not in seed.schema and "maximum" not in seed.schema
    model_name = params.get_param("model_name")
    assert (model_name.value, model_name.schema["type"]) == ("wine-classifier", "string")

    force = params.get_param("force_rerun")
    assert force.value is False
    assert force.schema["type"] == "boolean"
    assert force.description

    assert params.validate() == {
        "test_size": 0.25,
        "seed": 7,
        "n_estimators": 50,
        "max_depth": 4,
        "min_accuracy": 0.8,
        "model_name": "wine-classifier",
        "force_rerun": False,
    }


def test_enum_and_title_reach_the_param(tmp_path: Path) -> None:
    dag = python_pipeline(tmp_path).to_dag()
    kind = dag.params.get_param("kind")
    assert kind.schema["enum"] == ["rf", "gbm"]
    assert kind.schema["title"] == "Model kind"
    assert kind.schema["type"] == "string"
    lr = dag.params.get_param("lr")
    assert (lr.schema["minimum"], lr.schema["maximum"], lr.description) == (0, 1, "Learning rate.")
    assert dag.params.get_param("seed").schema["title"] == "seed"


@pytest.mark.parametrize(
    ("conf", "param"),
    [
        ({"seed": "seven"}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"test_size": 0.9}, "test_size"),
        ({"test_size": 0.01}, "test_size"),
        ({"n_estimators": 0}, "n_estimators"),
        ({"model_name": 3}, "model_name"),
        ({"force_rerun": "yes"}, "force_rerun"),
    ],
)
def test_params_reject_invalid_run_conf(wine_dag: DAG, conf: dict[str, object], param: str) -> None:
    # The task runtime path: DAG params merged with the run's conf, then validated.
    with pytest.raises(ParamValidationError, match=param):
        process_params(wine_dag, wine_dag.tasks[0], conf, suppress_exception=False)
    # The trigger path: the serialized DAG's params deep-merged with the conf.
    serialized = DagSerialization.from_dict(DagSerialization.to_dict(wine_dag))
    with pytest.raises(ParamValidationError, match=param):
        serialized.params.deep_merge(conf).validate()
    # And the ParamsDict API directly.
    params = ParamsDict()
    params.update(wine_dag.params)
    with pytest.raises(ParamValidationError, match=param):
        params.update(conf)
    # The DAG's own params are untouched.
    assert wine_dag.params.validate()["seed"] == 7


def test_params_accept_valid_run_conf(wine_dag: DAG) -> None:
    conf = {"seed": 3, "test_size": 0.5, "model_name": "iris", "force_rerun": True}
    resolved = process_params(wine_dag, wine_dag.tasks[0], conf, suppress_exception=False)
    assert {k: resolved[k] for k in conf} == conf
    serialized = DagSerialization.from_dict(DagSerialization.to_dict(wine_dag))
    assert serialized.params.deep_merge(conf).validate()["test_size"] == 0.5
    assert serialized.params.get_param("test_size").description == (
        "Fraction of the day's snapshot held out for evaluation."
    )


def test_enum_param_rejects_other_values(tmp_path: Path) -> None:
    dag = python_pipeline(tmp_path).to_dag()
    with pytest.raises(ParamValidationError, match="kind"):
        process_params(dag, dag.tasks[0], {"kind": "svm"}, suppress_exception=False)
    with pytest.raises(ParamValidationError, match="lr"):
        process_params(dag, dag.tasks[0], {"lr": 1.5}, suppress_exception=False)
    assert process_params(dag, dag.tasks[0], {"kind": "gbm"}, suppress_exception=False)["kind"] == "gbm"


# -- DAG-level settings ------------------------------------------------------------------
def test_schedule_start_date_catchup_tags(wine_dag: DAG) -> None:
    assert wine_dag.schedule == "@daily"
    assert wine_dag.timetable.can_be_scheduled
    start = wine_dag.start_date
    assert start is not None
    assert start.tzinfo is not None
    assert start.utcoffset() == timedelta(0)
    assert start == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert wine_dag.catchup is False
    assert {"mlpipe", "example", "sklearn"} <= set(wine_dag.tags)


def test_doc_md_has_description_and_mermaid(wine_dag: DAG) -> None:
    doc = wine_dag.doc_md
    assert doc is not None
    assert "Trains a random-forest classifier of wine cultivars every day" in doc
    assert "```mermaid" in doc
    mermaid = doc.split("```mermaid", 1)[1].split("```", 1)[0]
    assert "flowchart" in mermaid
    for step, ups in WINE_DEPS.items():
        for up in ups:
            assert re.search(rf"^\s*{up} -->\|\w+\| {step}$", mermaid, re.MULTILINE), (up, step)
    assert wine_dag.description is not None
    assert wine_dag.description.startswith("Trains a random-forest classifier")


def test_naive_datetime_start_date_becomes_utc(tmp_path: Path) -> None:
    dag = python_pipeline(tmp_path, schedule="@hourly", start_date=datetime(2026, 3, 4, 5, 6)).to_dag()
    assert dag.start_date == datetime(2026, 3, 4, 5, 6, tzinfo=timezone.utc)
    assert dag.start_date.utcoffset() == timedelta(0)


def test_unscheduled_pipeline(tmp_path: Path) -> None:
    dag = python_pipeline(tmp_path).to_dag()
    assert dag.schedule is None
    assert not dag.timetable.can_be_scheduled
    assert dag.start_date is None
    assert dag.catchup is False
    assert set(dag.tags) == {"mlpipe"}


def test_to_dag_overrides_id_and_passes_kwargs(tmp_path: Path) -> None:
    dag = load_pipeline(WINE).to_dag(
        dag_id="wine_custom",
        max_active_tasks=3,
        dagrun_timeout=timedelta(hours=2),
        default_args={"owner": "ml-team"},
        schedule=None,
    )
    assert dag.dag_id == "wine_custom"
    assert dag.max_active_tasks == 3
    assert dag.dagrun_timeout == timedelta(hours=2)
    assert dag.schedule is None
    assert {t.owner for t in dag.tasks} == {"ml-team"}
    # The rest of the spec is kept.
    assert dag.task_ids == WINE_TASKS
    assert "mlpipe" in dag.tags
    assert "force_rerun" in dag.params

    py = python_pipeline(tmp_path).to_dag(dag_id="py_custom", max_active_runs=2)
    assert (py.dag_id, py.max_active_runs) == ("py_custom", 2)


def test_max_active_runs_from_spec(tmp_path: Path) -> None:
    assert python_pipeline(tmp_path, max_active_runs=1).to_dag().max_active_runs == 1


# -- task-level settings -------------------------------------------------------------------
def test_example_step_settings_reach_the_run_task(wine_dag: DAG) -> None:
    # The example sets `defaults: {retries: 1, timeout: 10m}`. The operator enforces the
    # timeout on the step's process itself (Airflow's execution_timeout would also count
    # the time spent waiting for another run computing the same key).
    for step in WINE_STEPS:
        run = wine_dag.get_task(f"{step}.run")
        check = wine_dag.get_task(f"{step}.check")
        assert run.retries == 1
        assert run.retry_delay == timedelta(seconds=30)
        assert run.step.timeout == timedelta(minutes=10)
        assert run.execution_timeout is None
        assert check.retries == 2  # transient daemon/registry errors only
        assert check.execution_timeout is None


def test_python_step_settings_reach_the_run_task(tmp_path: Path) -> None:
    dag = python_pipeline(tmp_path).to_dag()
    run = dag.get_task("train.run")
    assert run.retries == 3
    assert run.retry_delay == timedelta(minutes=2)
    assert run.step.timeout == timedelta(hours=1)
    assert run.execution_timeout is None
    assert run.pool == "gpu_pool"
    assert run.queue == "gpu_queue"
    assert run.doc_md == "Fits the model."

    check = dag.get_task("train.check")
    assert check.retries == 2
    assert check.pool != "gpu_pool"
    # The sensor waits at least a day for a concurrent run computing the same key.
    assert check.timeout >= 24 * 3600

    # Steps without settings keep Airflow's defaults.
    plain = dag.get_task("prepare.run")
    assert plain.retries == 0
    assert plain.execution_timeout is None
    assert plain.pool == "default_pool"
    assert plain.queue != "gpu_queue"


def test_store_reaches_both_tasks(tmp_path: Path) -> None:
    dag = compile_pipeline(python_pipeline(tmp_path), store=str(tmp_path / "store"))
    for task in dag.tasks:
        assert task.store_uri == str(tmp_path / "store")
        assert task.pipeline.name == "py_pipeline"
    assert not (tmp_path / "store").exists()


# -- purity ----------------------------------------------------------------------------------
def test_compile_is_pure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sentinel.txt").write_text("x")
    monkeypatch.setenv("AIRFLOW__MLPIPE__STORE", str(tmp_path / "env-store"))
    monkeypatch.setenv("AIRFLOW__MLPIPE__STAT_CACHE", str(tmp_path / "stat" / "cache.sqlite"))
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "does" / "not" / "exist"
    pipeline = python_pipeline(base, cache_version="v1")
    assert pipeline.steps[1].externals()["raw"].path == "data/raw-{{ run_date }}.csv"
    before = files_under(tmp_path)

    dag = compile_pipeline(pipeline, store=str(tmp_path / "store"))
    dag_env_store = pipeline.to_dag(dag_id="other")

    assert files_under(tmp_path) == before == ["sentinel.txt"]
    assert dag.task_ids and dag_env_store.task_ids
    assert not base.exists()


def test_compile_in_fresh_interpreter_imports_no_cloud_sdks(tmp_path: Path) -> None:
    # Importable stand-ins for docker and boto3: a lazy import that slipped into the
    # compile path would find them and show up in sys.modules.
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name in ("docker", "boto3", "botocore"):
        (stubs / f"{name}.py").write_text("LOADED = True\n")
    work = tmp_path / "cwd"
    work.mkdir()
    code = textwrap.dedent(
        f"""
        import json, sys
        import airflow_mlpipe
        bare = {{m: m in sys.modules for m in ("airflow", "pydantic", "docker", "boto3")}}
        dag = airflow_mlpipe.load_pipeline({str(WINE)!r}).to_dag()
        after = {{m: m in sys.modules for m in ("airflow", "docker", "boto3", "botocore")}}
        print(json.dumps({{"bare": bare, "after": after, "tasks": len(dag.tasks)}}))
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(stubs), os.environ.get("PYTHONPATH")])),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR",
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, cwd=work, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bare"] == {"airflow": False, "pydantic": False, "docker": False, "boto3": False}
    assert result["after"] == {"airflow": True, "docker": False, "boto3": False, "botocore": False}
    assert result["tasks"] == 8
    assert list(work.iterdir()) == []


# -- the Python API ------------------------------------------------------------------------------
def test_python_api_compiles(tmp_path: Path) -> None:
    dag = python_pipeline(tmp_path).to_dag()
    assert dag.dag_id == "py_pipeline"
    assert list(dag.task_group.children) == ["prepare", "train", "evaluate", "publish"]
    assert dag.task_ids == [f"{s}.{k}" for s in ("prepare", "train", "evaluate", "publish") for k in ("check", "run")]
    assert dict(structure(dag)) == {
        "prepare.check": [],
        "prepare.run": ["prepare.check"],
        "train.check": ["prepare.run"],
        "train.run": ["train.check"],
        "evaluate.check": ["prepare.run", "train.run"],
        "evaluate.run": ["evaluate.check"],
        "publish.check": ["evaluate.run"],
        "publish.run": ["publish.check"],
    }
    assert list(dag.params) == ["seed", "lr", "kind", "force_rerun"]
    assert dag.description == "A pipeline from Python."
    assert "Compiled by airflow-mlpipe from `Python`" in (dag.doc_md or "")
    assert "-.->" in (dag.doc_md or "")  # `after` edges are drawn dashed
    run = dag.task_dict["train.run"]
    assert run.pipeline.base_dir == tmp_path
    assert run.step.inputs["dataset"] == "prepare.dataset"
    assert isinstance(dag.task_dict["prepare.run"].step.inputs["raw"], External)


def test_python_api_equals_yaml_structure(tmp_path: Path) -> None:
    """The same graph written in YAML compiles to the same tasks and edges."""
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        textwrap.dedent(
            """
            name: py_pipeline
            params:
              seed: {type: integer, default: 7}
              lr: {type: number, default: 0.1, minimum: 0, maximum: 1}
              kind: {type: string, default: rf, enum: [rf, gbm]}
            source: src
            steps:
              train:
                command: [python, train.py, "{{ inputs.dataset }}", "{{ params.lr }}", "{{ outputs.model }}"]
                inputs: {dataset: prepare.dataset}
                outputs: [model]
              prepare:
                command: [python, prepare.py, --raw, "{{ inputs.raw }}", --out, "{{ outputs.dataset }}"]
                inputs: {raw: {path: "data/raw-{{ run_date }}.csv"}}
                outputs: [dataset]
              publish:
                command: [python, publish.py, "{{ params.kind }}"]
                after: [evaluate]
              evaluate:
                command: [python, evaluate.py, "{{ inputs.model }}", "{{ inputs.data }}", "{{ outputs.report }}"]
                inputs: {model: train.model, data: prepare.dataset}
                outputs: [report]
            """
        )
    )
    from_yaml = load_pipeline(spec).to_dag()
    from_python = python_pipeline(tmp_path).to_dag()
    assert structure(from_yaml) == structure(from_python)
    assert list(from_yaml.params) == list(from_python.params)


def test_python_api_without_base_dir_uses_the_calling_file() -> None:
    pipeline = python_pipeline(None)
    assert pipeline.base_dir is None
    dag = pipeline.to_dag()
    assert dag.task_dict["train.run"].pipeline.base_dir == HERE
    assert dag.task_dict["train.check"].pipeline.base_dir == HERE
    assert dag.task_dict["train.run"].pipeline.source_dir(pipeline.step("train")) == HERE / "src"
    # The pipeline object itself is frozen and unchanged.
    assert pipeline.base_dir is None


def test_python_api_without_base_dir_from_another_file(tmp_path: Path) -> None:
    dag_file = tmp_path / "dags" / "my_dag.py"
    dag_file.parent.mkdir()
    dag_file.write_text(
        "from airflow_mlpipe import Pipeline, Step\n"
        "pipeline = Pipeline(name='other', steps=[Step(name='x', command=['python', 'x.py'])])\n"
        "dag = pipeline.to_dag()\n"
    )
    namespace: dict[str, object] = {}
    exec(compile(dag_file.read_text(), str(dag_file), "exec"), namespace)
    dag = namespace["dag"]
    assert isinstance(dag, DAG)
    assert dag.task_dict["x.run"].pipeline.base_dir == dag_file.parent


# -- invalid pipelines --------------------------------------------------------------------------
def test_invalid_python_pipeline_raises_spec_error(tmp_path: Path) -> None:
    a = Step(name="a", command=["python", "a.py", "{{ params.missing }}"], inputs={"x": "b.out"}, outputs=["out"])
    b = Step(name="b", command=["python", "b.py"], inputs={"y": a.output("out")}, outputs=["out"])
    c = Step(name="c", command=["python", "c.py"], inputs={"z": "nope.out"})
    pipeline = Pipeline(name="bad", steps=[a, b, c], base_dir=tmp_path)
    with pytest.raises(SpecError) as info:
        pipeline.to_dag()
    where = {(i.step, i.field) for i in info.value.issues}
    assert ("a", "command[2]") in where  # undeclared param
    assert ("c", "inputs.z") in where  # unknown upstream step
    assert any("cycle" in i.message for i in info.value.issues)
    assert "`nope`" in str(info.value)
    with pytest.raises(SpecError):
        compile_pipeline(pipeline)


def test_invalid_schedule_without_start_date_raises_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        python_pipeline(tmp_path, schedule="@daily").to_dag()
    assert info.value.field == "start_date"


def test_reserved_param_name_raises_spec_error(tmp_path: Path) -> None:
    pipeline = Pipeline(
        name="p",
        params={"force_rerun": ParamSpec(type="boolean", default=False)},
        steps=[Step(name="x", command=["python", "x.py"])],
        base_dir=tmp_path,
    )
    with pytest.raises(SpecError) as info:
        pipeline.to_dag()
    assert info.value.field == "params.force_rerun"


def test_blank_description_compiles(tmp_path: Path) -> None:
    """A whitespace-only description passes validation, so it must compile too."""
    pipeline = python_pipeline(tmp_path, description="  \n ")
    assert pipeline.check() is pipeline
    dag = pipeline.to_dag()
    assert not dag.description
    assert dag.task_ids


def test_on_local_target_runs_every_step_as_a_local_process() -> None:
    dag = load_pipeline(WINE).on_local_target().to_dag()
    for step in WINE_STEPS:
        assert isinstance(dag.get_task(f"{step}.run"), LocalStepOperator)
