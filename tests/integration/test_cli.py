"""The `mlpipe` command line, the provider registration and DAG parsing, end to end.

Every command runs in a subprocess with this session's environment, so it sees
the private AIRFLOW_HOME set up in conftest.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from airflow_mlpipe.version import __version__

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "dags_examples"
WINE = EXAMPLES / "wine" / "pipeline.yaml"
MLPIPE = ROOT / ".venv" / "bin" / "mlpipe"
WINE_EDGES = {
    ("prepare", "train", "dataset"),
    ("prepare", "evaluate", "dataset"),
    ("train", "evaluate", "model"),
    ("train", "register", "model"),
    ("evaluate", "register", "report"),
}
WINE_TASKS = [f"{step}.{kind}" for step in ("prepare", "train", "evaluate", "register") for kind in ("check", "run")]


def run(
    argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, check=False, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def mlpipe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(MLPIPE)] if MLPIPE.exists() else [sys.executable, "-m", "airflow_mlpipe.cli"]
    return run([*command, *args], env=env)


def airflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "airflow", *args], env=env)


@pytest.fixture
def write_spec(tmp_path: Path):
    def write(text: str, name: str = "pipeline.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


# -- invalid specs, one problem each -----------------------------------------------------
CYCLE = """
    name: cyc
    steps:
      first:
        command: [python, a.py, "{{ inputs.x }}"]
        inputs: {x: second.out}
        outputs: [out]
      second:
        command: [python, b.py, "{{ inputs.y }}"]
        inputs: {y: first.out}
        outputs: [out]
"""
UNKNOWN_INPUT_STEP = """
    name: unknown_input
    steps:
      prepare:
        command: [python, prepare.py]
        outputs: [dataset]
      train:
        command: [python, train.py, "{{ inputs.dataset }}"]
        inputs: {dataset: prepar.dataset}
"""
DUPLICATE_STEP = """
    name: dup
    steps:
      train:
        command: [python, a.py]
      train:
        command: [python, b.py]
"""
UNDECLARED_PARAM = """
    name: undeclared
    params:
      lr: {type: number, default: 0.1}
    steps:
      train:
        command: [python, train.py, --lr, "{{ params.learning_rate }}"]
"""
INVALID_SPECS = {
    # case: (yaml, step named, field(s) one of which is named, words of the message)
    "cycle": (CYCLE, "first", "inputs", "cycle"),
    "unknown_input_step": (UNKNOWN_INPUT_STEP, "train", "inputs.dataset", "prepar"),
    "duplicate_step": (DUPLICATE_STEP, "train", ("name", "steps"), "duplicate"),
    "undeclared_param": (UNDECLARED_PARAM, "train", "command[3]", "learning_rate"),
}


# -- mlpipe validate ----------------------------------------------------------------------
def test_validate_example_ok() -> None:
    proc = mlpipe("validate", str(WINE))
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout
    assert "wine_classifier" in proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("case", sorted(INVALID_SPECS))
def test_validate_invalid_spec(case: str, write_spec) -> None:
    text, step, field, words = INVALID_SPECS[case]
    spec = write_spec(text, f"{case}.yaml")
    proc = mlpipe("validate", str(spec))
    print(proc.stderr)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert f"step `{step}`" in proc.stderr
    fields = (field,) if isinstance(field, str) else field
    assert any(f"field `{f}`" in proc.stderr for f in fields), proc.stderr
    assert words in proc.stderr
    assert str(spec) in proc.stderr
    assert proc.stdout.strip() == ""


def test_validate_several_files_reports_each(write_spec) -> None:
    bad = write_spec(CYCLE, "bad.yaml")
    proc = mlpipe("validate", str(WINE), str(bad))
    assert proc.returncode == 2
    assert "wine_classifier" in proc.stdout
    assert "cycle" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_validate_missing_file_is_a_clean_error(tmp_path: Path) -> None:
    proc = mlpipe("validate", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert "nope.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- mlpipe schema ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def schema() -> dict:
    proc = mlpipe("schema")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def example_as_json() -> dict:
    # YAML dates (start_date) become date objects; JSON has strings.
    return json.loads(json.dumps(yaml.safe_load(WINE.read_text()), default=str))


def test_schema_is_a_json_schema(schema: dict) -> None:
    validator = jsonschema.validators.validator_for(schema)
    validator.check_schema(schema)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "steps" in schema["required"]
    assert {"name", "params", "steps", "defaults", "schedule", "start_date"} <= set(schema["properties"])


def test_example_validates_against_schema(schema: dict) -> None:
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(example_as_json())]
    assert errors == []


@pytest.mark.parametrize(
    "where",
    ["top", "step", "defaults", "param", "source"],
)
def test_unknown_field_fails_schema_validation(schema: dict, where: str) -> None:
    data = example_as_json()
    target = {
        "top": data,
        "step": data["steps"]["train"],
        "defaults": data["defaults"],
        "param": data["params"]["seed"],
        "source": data["steps"]["train"]["source"],
    }[where]
    target["retires"] = 3
    with pytest.raises(jsonschema.ValidationError, match="retires"):
        jsonschema.validate(data, schema)


def test_schema_rejects_wrong_types(schema: dict) -> None:
    data = example_as_json()
    data["steps"]["train"]["retries"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)
    data = example_as_json()
    data["params"]["seed"]["type"] = "int"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)


# -- mlpipe graph -----------------------------------------------------------------------------
def test_graph_mermaid_shows_every_edge() -> None:
    proc = mlpipe("graph", str(WINE))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("flowchart")
    found = set(re.findall(r"^\s*(\w+) -->\|(\w+)\| (\w+)\s*$", proc.stdout, re.MULTILINE))
    assert {(up, down, label) for up, label, down in found} == WINE_EDGES
    for step in ("prepare", "train", "evaluate", "register"):
        assert f"{step}[{step}]" in proc.stdout


def test_graph_dot_shows_every_edge() -> None:
    proc = mlpipe("graph", str(WINE), "--format", "dot")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith('digraph "wine_classifier"')
    assert proc.stdout.rstrip().endswith("}")
    found = set(re.findall(r'^\s*"(\w+)" -> "(\w+)" \[label="(\w+)"\];$', proc.stdout, re.MULTILINE))
    assert found == WINE_EDGES


def test_graph_of_invalid_spec_exits_2(write_spec) -> None:
    proc = mlpipe("graph", str(write_spec(CYCLE)))
    assert proc.returncode == 2
    assert "cycle" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- mlpipe compile ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compiled() -> str:
    proc = mlpipe("compile", str(WINE))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _task_lines(output: str) -> dict[str, str]:
    lines = {}
    for line in output.splitlines():
        words = line.split()
        if words and words[0] in WINE_TASKS:
            lines[words[0]] = line
    return lines


def test_compile_lists_all_tasks(compiled: str) -> None:
    assert "DAG `wine_classifier`" in compiled
    assert "force_rerun" in compiled
    lines = _task_lines(compiled)
    assert list(lines) == WINE_TASKS
    for task, line in lines.items():
        kind = "CacheCheckSensor" if task.endswith(".check") else "DockerStepOperator"
        assert kind in line
        assert "trigger_rule=" in line
    assert lines["evaluate.check"].endswith("after: prepare.run, train.run")
    assert lines["register.run"].endswith("after: register.check")
    assert lines["prepare.check"].endswith("after: -")


def test_compile_prints_trigger_rule_names(compiled: str) -> None:
    """Trigger rules as Airflow names them (`none_failed`), as in the UI and the docs."""
    for task, line in _task_lines(compiled).items():
        rule = "none_failed" if task.endswith(".check") else "all_success"
        assert re.search(rf"trigger_rule={rule}\s", line), line


def test_compile_dag_id_override() -> None:
    proc = mlpipe("compile", str(WINE), "--dag-id", "wine_other")
    assert proc.returncode == 0, proc.stderr
    assert "DAG `wine_other`" in proc.stdout


def test_compile_invalid_spec_exits_2(write_spec) -> None:
    proc = mlpipe("compile", str(write_spec(UNKNOWN_INPUT_STEP)))
    assert proc.returncode == 2
    assert "step `train`" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- Airflow sees the provider -------------------------------------------------------------------
def test_airflow_providers_list_includes_mlpipe(airflow_home: Path) -> None:
    proc = airflow("providers", "list", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    start = proc.stdout.index("[")
    providers = {p["package_name"]: p for p in json.loads(proc.stdout[start:])}
    assert "airflow-mlpipe" in providers, sorted(providers)
    assert providers["airflow-mlpipe"]["version"] == __version__

    plain = airflow("providers", "list")
    assert plain.returncode == 0, plain.stderr
    assert "airflow-mlpipe" in plain.stdout


def test_airflow_config_reads_mlpipe_store(airflow_home: Path, tmp_path: Path) -> None:
    store = str(tmp_path / "shared-store")
    proc = airflow("config", "get-value", "mlpipe", "store", env={"AIRFLOW__MLPIPE__STORE": store})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == store


# -- DAG parsing, as the DAG processor does it -----------------------------------------------------
def test_dagbag_parses_the_examples(airflow_home: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(EXAMPLES))
    assert bag.import_errors == {}
    assert "wine_classifier" in bag.dag_ids
    dag = bag.get_dag("wine_classifier")
    assert dag is not None
    assert [t.task_id for t in dag.tasks] == WINE_TASKS


def test_dagbag_shows_a_readable_spec_error(airflow_home: Path, tmp_path: Path, capsys) -> None:
    from airflow.dag_processing.dagbag import DagBag

    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "bad.yaml").write_text(textwrap.dedent(UNKNOWN_INPUT_STEP).lstrip())
    dag_file = folder / "bad_dag.py"
    dag_file.write_text('from airflow_mlpipe import load_pipeline\ndag = load_pipeline("bad.yaml").to_dag()\n')

    bag = DagBag(dag_folder=str(folder))

    assert not bag.dag_ids
    assert list(bag.import_errors) == [str(dag_file)]
    error = bag.import_errors[str(dag_file)]
    with capsys.disabled():
        print(f"\n--- DagBag import error for {dag_file.name} ---\n{error}--- end ---")
    assert "Invalid pipeline spec" in error
    assert str(folder / "bad.yaml") in error
    assert "step `train`" in error
    assert "field `inputs.dataset`" in error
    assert "unknown step `prepar`" in error


# -- mlpipe run: refused before anything runs --------------------------------------------------------
def test_run_unknown_param_exits_2(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = mlpipe("run", str(WINE), "-p", "seed=3", "-p", "n_trees=10", "--home", str(home))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "`n_trees`" in proc.stderr
    assert "n_estimators" in proc.stderr  # the known params are listed
    assert "Traceback" not in proc.stderr
    assert not home.exists()


def test_run_malformed_param_exits_2(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = mlpipe("run", str(WINE), "-p", "seed", "--home", str(home))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "seed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not home.exists()


def test_run_invalid_spec_exits_2(tmp_path: Path, write_spec) -> None:
    home = tmp_path / "home"
    proc = mlpipe("run", str(write_spec(UNDECLARED_PARAM)), "--home", str(home))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "learning_rate" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not home.exists()


PY_DAG = """
from airflow_mlpipe import ParamSpec, Pipeline, Step

CODE = (
    "import json, os; "
    "json.dump({'n': int(os.environ['MLPIPE_PARAM_N'])}, open(os.environ['MLPIPE_METRICS_FILE'], 'w'))"
)
dag = Pipeline(
    name="cli_py_params",
    params={"n": ParamSpec(type="integer", default=1)},
    steps=[Step(name="echo", command=["python", "-c", CODE], params=["n"], cache=False)],
).to_dag()
"""


def test_run_python_dag_file_checks_and_uses_params(airflow_home: Path, tmp_path: Path) -> None:
    """`-p` applies to Python DAG files too: unknown names are refused, values are used."""
    dag_file = tmp_path / "pipeline_dag.py"
    dag_file.write_text(PY_DAG)
    common = ["--home", str(airflow_home), "--store", str(tmp_path / "store")]

    proc = mlpipe("run", str(dag_file), "-p", "bogus=3", *common)
    assert proc.returncode == 2, f"unknown param accepted:\n{proc.stdout}\n{proc.stderr[-2000:]}"
    assert "`bogus`" in proc.stderr

    proc = mlpipe("run", str(dag_file), "-p", "n=5", *common)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "n=5" in proc.stdout, proc.stdout
