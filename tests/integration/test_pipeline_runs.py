"""Pipelines run through Airflow (`dag.test()`, the real task runner, XCom and skips),
with real subprocesses and a real store: the acceptance criteria of the cache."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from airflow_mlpipe.runner import RunReport, run_pipeline
from airflow_mlpipe.store import LocalStore
from tests.conftest import EXAMPLES
from tests.integration.helpers import manifests, results, write_pipeline

pytestmark = pytest.mark.airflow


@pytest.fixture
def wine(tmp_path: Path) -> Path:
    """A private copy of the example, so tests can edit its scripts; run on the local
    target (the Docker tests run it in containers)."""
    dest = tmp_path / "wine"
    shutil.copytree(EXAMPLES / "wine", dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@pytest.fixture
def run_wine(wine: Path, store: Path, airflow_home: Path):
    def run(**params: object) -> RunReport:
        report = run_pipeline(wine / "pipeline.yaml", conf=params, home=airflow_home, store=str(store), local=True)
        print(report.table())
        assert report.ok, report.table()
        return report

    return run


def test_first_run_computes_every_step_and_second_run_hits_all(run_wine, store: Path) -> None:
    first = run_wine()
    assert results(first) == {"prepare": "miss", "train": "miss", "evaluate": "miss", "register": "miss"}
    assert {r.state for r in first.rows} == {"success"}
    evaluate = next(r for r in first.rows if r.step == "evaluate")
    assert 0.8 <= evaluate.metrics["accuracy"] <= 1.0
    release = LocalStore(store).get(first.rows[-1].key or "")
    assert release is not None
    card = json.loads(next(Path(release.outputs["release"].uri).glob("wine-classifier/*/card.json")).read_text())
    assert card["metrics"]["accuracy"] == evaluate.metrics["accuracy"]
    before = {p: p.stat().st_mtime_ns for p in manifests(store)}
    assert len(before) == 4

    second = run_wine()
    assert set(results(second).values()) == {"hit"}
    # The run tasks never started: skipped by the checks, and nothing new was written.
    assert {r.state for r in second.rows} == {"skipped"}
    assert {p: p.stat().st_mtime_ns for p in manifests(store)} == before
    assert [r.metrics for r in second.rows] == [r.metrics for r in first.rows]


def test_editing_one_script_reruns_it_and_downstream_only_when_its_output_changes(run_wine, wine: Path) -> None:
    run_wine()
    train = wine / "steps" / "train.py"

    # A comment changes the code but not the model's bytes: downstream steps hit.
    train.write_text(train.read_text() + "\n# tuned later\n")
    assert results(run_wine()) == {"prepare": "hit", "train": "miss", "evaluate": "hit", "register": "hit"}

    # A real change of behaviour changes the model: evaluate and register re-run.
    train.write_text(train.read_text().replace("random_state=0", "random_state=1"))
    assert results(run_wine()) == {"prepare": "hit", "train": "miss", "evaluate": "miss", "register": "miss"}


def test_changing_a_shared_helper_reruns_every_step_that_includes_it(run_wine, wine: Path) -> None:
    run_wine()
    common = wine / "steps" / "common.py"
    common.write_text(common.read_text() + "\n# shared helper touched\n")
    assert set(results(run_wine()).values()) == {"miss"}


def test_a_param_change_reruns_only_the_steps_that_use_it(run_wine) -> None:
    run_wine()
    assert results(run_wine(min_accuracy=0.5)) == {
        "prepare": "hit",
        "train": "hit",
        "evaluate": "hit",
        "register": "miss",
    }
    assert results(run_wine(n_estimators=20)) == {
        "prepare": "hit",
        "train": "miss",
        "evaluate": "miss",
        "register": "miss",
    }
    # Back to the defaults: the earlier results are still in the store.
    assert set(results(run_wine()).values()) == {"hit"}


def test_force_rerun_recomputes_everything(run_wine) -> None:
    run_wine()
    report = run_wine(force_rerun=True)
    assert set(results(report).values()) == {"miss"}
    assert {r.state for r in report.rows} == {"success"}


# -- small pipelines for the edges ------------------------------------------------


DATED = """
    name: dated
    source: steps
    steps:
      stamp:
        command: [python, stamp.py, "{{ run_date }}", "{{ outputs.out }}"]
        outputs: [out]
"""
STAMP = """
    import sys, pathlib
    pathlib.Path(sys.argv[2], "date.txt").write_text(sys.argv[1])
"""


def test_run_date_works_for_manual_runs_without_logical_date_and_for_dated_runs(
    tmp_path: Path, store: Path, airflow_home: Path
) -> None:
    spec = write_pipeline(tmp_path, DATED, {"stamp.py": STAMP})
    stored = LocalStore(store)

    def stamped(report: RunReport) -> str:
        manifest = stored.get(report.rows[0].key or "")
        assert manifest is not None
        return (Path(manifest.outputs["out"].uri) / "date.txt").read_text()

    manual = run_pipeline(spec, conf={}, home=airflow_home, store=str(store))
    assert manual.ok
    assert stamped(manual) == datetime.now(timezone.utc).strftime("%Y-%m-%d")

    dated = run_pipeline(
        spec, conf={}, home=airflow_home, store=str(store), logical_date=datetime(2026, 11, 2, tzinfo=timezone.utc)
    )
    assert dated.ok and results(dated) == {"stamp": "miss"}
    assert stamped(dated) == "2026-11-02"
    again = run_pipeline(
        spec, conf={}, home=airflow_home, store=str(store), logical_date=datetime(2026, 11, 2, tzinfo=timezone.utc)
    )
    assert results(again) == {"stamp": "hit"}


EXTERNAL = """
    name: external_data
    source: steps
    steps:
      count:
        inputs: {data: {path: "data/rows.csv"}}
        command: [python, count.py, "{{ inputs.data }}", "{{ outputs.counts }}"]
        outputs: [counts]
"""
COUNT = """
    import sys, pathlib
    rows = pathlib.Path(sys.argv[1]).read_text().splitlines()
    pathlib.Path(sys.argv[2], "n.txt").write_text(str(len(rows)))
"""


def test_external_input_content_not_mtime_decides(tmp_path: Path, store: Path, airflow_home: Path) -> None:
    spec = write_pipeline(tmp_path, EXTERNAL, {"count.py": COUNT})
    data = tmp_path / "data" / "rows.csv"
    data.parent.mkdir()
    data.write_text("a\nb\n")

    def run() -> dict[str, str]:
        report = run_pipeline(spec, conf={}, home=airflow_home, store=str(store))
        assert report.ok
        return results(report)

    assert run() == {"count": "miss"}
    os.utime(data, (1_700_000_000, 1_700_000_000))
    assert run() == {"count": "hit"}
    data.write_text("a\nb\nc\n")
    assert run() == {"count": "miss"}


FAILING = """
    name: failing
    source: steps
    steps:
      crash:
        command: [python, crash.py, "{{ outputs.out }}"]
        outputs: [out]
"""
CRASH = """
    import sys, pathlib
    out = pathlib.Path(sys.argv[1])
    (out / "partial.bin").write_bytes(b"half")
    for i in range(40):
        print(f"working {i}")
    print("about to fail: bad data in row 17")
    sys.exit(3)
"""


def test_a_failing_step_reports_its_exit_code_and_log_tail_and_commits_nothing(
    tmp_path: Path, store: Path, airflow_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    spec = write_pipeline(tmp_path, FAILING, {"crash.py": CRASH})
    report = run_pipeline(spec, conf={}, home=airflow_home, store=str(store))
    out = capfd.readouterr()
    assert not report.ok
    assert report.rows[0].state == "failed"
    logs = out.out + out.err
    assert "Step `crash` failed: exit code 3" in logs
    assert "about to fail: bad data in row 17" in logs
    # Nothing half-written can be taken for a result: no manifest, no object, no staging left.
    assert not manifests(store)
    assert not list(store.glob("objects/*/*"))
    assert not any((store / "staging").iterdir())

    (tmp_path / "steps" / "crash.py").write_text(textwrap.dedent(CRASH).replace("sys.exit(3)", "sys.exit(0)"))
    fixed = run_pipeline(spec, conf={}, home=airflow_home, store=str(store))
    assert fixed.ok and results(fixed) == {"crash": "miss"}


SLOW = """
    name: slow
    source: steps
    steps:
      sleepy:
        timeout: 2s
        command: [python, sleepy.py, "{{ outputs.out }}"]
        outputs: [out]
"""
SLEEPY = """
    import os, subprocess, sys, time, pathlib
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    pathlib.Path(os.environ["PIDS"]).write_text(f"{os.getpid()} {child.pid}")
    time.sleep(60)
"""


def _gone(pid: int, wait: float = 5.0) -> bool:
    """True once `pid` has exited (a zombie awaiting its reaper counts as exited)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def test_a_step_over_its_timeout_is_killed_with_its_children(tmp_path: Path, store: Path, airflow_home: Path) -> None:
    pids = tmp_path / "pids.txt"
    spec = write_pipeline(
        tmp_path, SLOW.replace("timeout: 2s", f"timeout: 2s\n        env: {{PIDS: '{pids}'}}"), {"sleepy.py": SLEEPY}
    )
    report = run_pipeline(spec, conf={}, home=airflow_home, store=str(store))
    assert not report.ok
    for pid in map(int, pids.read_text().split()):
        assert _gone(pid), f"process {pid} of the timed-out step is still running"
    assert not manifests(store)


METRICS = """
    name: metrics_pipeline
    source: steps
    steps:
      score:
        command: [python, score.py]
        outputs: [out]
"""


def test_metrics_land_in_the_manifest_and_bad_metrics_fail_the_step(
    tmp_path: Path, store: Path, airflow_home: Path
) -> None:
    good = """
        import json, os
        json.dump({"auc": 0.91, "rows": 120}, open(os.environ["MLPIPE_METRICS_FILE"], "w"))
        open(os.path.join(os.environ["MLPIPE_OUTPUT_OUT"], "x"), "w").write("x")
    """
    spec = write_pipeline(tmp_path, METRICS, {"score.py": good})
    report = run_pipeline(spec, conf={}, home=airflow_home, store=str(store))
    assert report.ok and report.rows[0].metrics == {"auc": 0.91, "rows": 120}
    manifest = LocalStore(store).get(report.rows[0].key or "")
    assert manifest is not None and manifest.metrics == {"auc": 0.91, "rows": 120}
    assert manifest.producer.dag_id == "metrics_pipeline" and manifest.producer.task_id == "score.run"

    bad = 'import os; open(os.environ["MLPIPE_METRICS_FILE"], "w").write("{not json")'
    (tmp_path / "steps" / "score.py").write_text(bad)
    assert not run_pipeline(spec, conf={}, home=airflow_home, store=str(store)).ok


def test_step_environment_is_clean_and_gets_its_declared_env(tmp_path: Path, store: Path, airflow_home: Path) -> None:
    dump = """
        import json, os, sys
        json.dump(dict(os.environ), open(os.path.join(sys.argv[1], "env.json"), "w"))
    """
    spec = write_pipeline(
        tmp_path,
        """
        name: env_pipeline
        source: steps
        params: {lr: {type: number, default: 0.1}}
        steps:
          dump:
            params: [lr]
            env: {GREETING: "hello {{ params.lr }}"}
            command: [python, dump.py, "{{ outputs.out }}"]
            outputs: [out]
        """,
        {"dump.py": dump},
    )
    os.environ["SECRET_TOKEN_FOR_TEST"] = "do-not-leak"
    try:
        report = run_pipeline(spec, conf={}, home=airflow_home, store=str(store))
    finally:
        del os.environ["SECRET_TOKEN_FOR_TEST"]
    manifest = LocalStore(store).get(report.rows[0].key or "")
    assert manifest is not None
    env = json.loads((Path(manifest.outputs["out"].uri) / "env.json").read_text())
    assert env["GREETING"] == "hello 0.1"
    assert env["MLPIPE_PARAM_LR"] == "0.1"
    assert env["MLPIPE_STEP"] == "dump"
    assert "SECRET_TOKEN_FOR_TEST" not in env
    assert not any(k.startswith("AIRFLOW") for k in env)


PY_DAG = """
    from airflow_mlpipe import ParamSpec, Pipeline, Step

    make = Step(name="make", command=["python", "make.py", "{{ params.n }}", "{{ outputs.numbers }}"],
                outputs=["numbers"], source={"include": ["make.py"]})
    total = Step(name="total", command=["python", "total.py", "{{ inputs.numbers }}", "{{ outputs.total }}"],
                 inputs={"numbers": make.output("numbers")}, outputs=["total"], source={"include": ["total.py"]})
    dag = Pipeline(name="python_api", source="steps", params={"n": ParamSpec(type="integer", default=5)},
                   steps=[make, total]).to_dag()
"""


def test_python_api_pipeline_runs_like_yaml(tmp_path: Path, store: Path, airflow_home: Path) -> None:
    write_pipeline(
        tmp_path,
        "",
        {
            "make.py": """
                import sys, pathlib
                pathlib.Path(sys.argv[2], "n.txt").write_text("\\n".join(map(str, range(int(sys.argv[1])))))
            """,
            "total.py": """
                import sys, pathlib
                numbers = pathlib.Path(sys.argv[1], "n.txt").read_text().split()
                pathlib.Path(sys.argv[2], "total.txt").write_text(str(sum(map(int, numbers))))
            """,
        },
    )
    dag_file = tmp_path / "python_api_dag.py"
    dag_file.write_text(textwrap.dedent(PY_DAG))
    first = run_pipeline(dag_file, conf={"n": 5}, home=airflow_home, store=str(store))
    assert first.ok and results(first) == {"make": "miss", "total": "miss"}
    total = LocalStore(store).get(first.rows[1].key or "")
    assert total is not None and (Path(total.outputs["total"].uri) / "total.txt").read_text() == "10"
    second = run_pipeline(dag_file, conf={"n": 5}, home=airflow_home, store=str(store))
    assert results(second) == {"make": "hit", "total": "hit"}


def test_an_expired_result_is_recomputed_not_reused(tmp_path: Path, store: Path, airflow_home: Path) -> None:
    spec = write_pipeline(
        tmp_path,
        """
        name: aging
        source: steps
        steps:
          stamp:
            cache: {max_age: 1s}
            command: [python, stamp.py, "{{ run_date }}", "{{ outputs.out }}"]
            outputs: [out]
        """,
        {"stamp.py": STAMP},
    )
    first = run_pipeline(spec, conf={}, home=airflow_home, store=str(store))
    key = first.rows[0].key or ""
    produced = LocalStore(store).get(key)
    time.sleep(1.5)
    second = run_pipeline(spec, conf={}, home=airflow_home, store=str(store))
    assert results(second) == {"stamp": "miss"} and second.rows[0].state == "success"
    again = LocalStore(store).get(key)
    assert produced is not None and again is not None
    assert again.finished_at > produced.finished_at  # computed anew, same key
