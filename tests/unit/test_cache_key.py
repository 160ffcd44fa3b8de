"""The cache-key matrix of DESIGN.md ("The cache key"), through `StepRuntime`.

Each case builds a small project on disk (spec + `steps/` code folder + an external
data file), computes a step's key, applies one change and computes it again.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_mlpipe.cache_key import KeyComponents, cache_key, explain_change
from airflow_mlpipe.loader import load_pipeline
from airflow_mlpipe.manifest import StepResult
from airflow_mlpipe.runtime import Fingerprint, StepRuntime
from airflow_mlpipe.spec import Pipeline
from airflow_mlpipe.store.local import LocalStore

CODE = {
    "prepare.py": "from common import load\nprint('prepare')\n",
    "train.py": "from common import load\nprint('train')\n",
    "report.py": "print('report')\n",
    "common.py": "def load(path):\n    return open(path).read()\n",
}

SPEC: dict[str, Any] = {
    "name": "demo",
    "description": "A tiny pipeline for cache-key tests.",
    "source": "steps",
    "params": {
        "lr": {"type": "number", "default": 0.1},
        "seed": {"type": "integer", "default": 1},
        "epochs": {"type": "integer", "default": 3},
        "unused": {"type": "string", "default": "x"},
    },
    "steps": {
        "prepare": {
            "description": "Split the raw data.",
            "source": {"include": ["prepare.py", "common.py"]},
            "inputs": {"raw": {"path": "data.csv"}},
            "command": [
                "python",
                "prepare.py",
                "--raw",
                "{{ inputs.raw }}",
                "--seed",
                "{{ params.seed }}",
                "--out",
                "{{ outputs.dataset }}",
            ],
            "env": {"MODE": "fast", "WORKERS": "2"},
            "outputs": ["dataset"],
        },
        "train": {
            "source": {"include": ["train.py", "common.py"]},
            "inputs": {"dataset": "prepare.dataset"},
            "params": ["epochs"],
            "command": [
                "python",
                "train.py",
                "--data",
                "{{ inputs.dataset }}",
                "--lr",
                "{{ params.lr }}",
                "--out",
                "{{ outputs.model }}",
            ],
            "outputs": ["model"],
        },
        # No include: the whole `steps/` folder is its code.
        "report": {"command": ["python", "report.py", "--date", "{{ run_date }}"]},
    },
}


@dataclass
class Project:
    """A pipeline project on disk plus everything else a key depends on."""

    root: Path
    store: LocalStore
    spec: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(SPEC))
    params: dict[str, Any] = field(default_factory=dict)
    run_date: str = "2026-11-02"
    environment: str = "env-a"
    #: Files `prepare.dataset` holds in this run.
    dataset: dict[str, str] = field(default_factory=lambda: {"train.csv": "x,y\n1,2\n", "test.csv": "x,y\n3,4\n"})
    #: How the upstream result was obtained (must not matter).
    upstream_meta: dict[str, Any] = field(default_factory=lambda: {"key": "k1", "hit": False, "produced_by": "run-1"})

    def write(self) -> None:
        (self.root / "steps").mkdir(parents=True, exist_ok=True)
        for name, text in CODE.items():
            (self.root / "steps" / name).write_text(text)
        (self.root / "data.csv").write_text("a,b\n1,2\n")

    @property
    def steps(self) -> Path:
        return self.root / "steps"

    def step_spec(self, step: str) -> dict[str, Any]:
        return self.spec["steps"][step]

    def upstream(self) -> dict[str, StepResult]:
        """`prepare`'s result as a fresh commit of `self.dataset` into the store."""
        staging = self.store.new_staging("dataset")
        for name, text in self.dataset.items():
            (staging / name).write_text(text)
        record = self.store.commit_output(staging)
        return {"prepare": StepResult(step="prepare", outputs={"dataset": record}, **self.upstream_meta)}

    def pipeline(self) -> Pipeline:
        """Write the spec as YAML (keys in dict order) and load it like a DAG file would."""
        spec_path = self.root / "pipeline.yaml"
        spec_path.write_text(yaml.safe_dump(self.spec, sort_keys=False))
        return load_pipeline(spec_path)

    def fingerprint(self, step: str) -> Fingerprint:
        pipeline = self.pipeline()
        runtime = StepRuntime(
            pipeline,
            pipeline.step(step),
            store=self.store,
            params=self.params,
            run_date=self.run_date,
            upstream=self.upstream() if step == "train" else {},
            stat_cache=None,
        )
        code = runtime.code_tree()
        return runtime.fingerprint(code, environment=self.environment)

    def key(self, step: str) -> str:
        return self.fingerprint(step).key


@pytest.fixture
def project(tmp_path: Path) -> Project:
    proj = Project(root=tmp_path / "project", store=LocalStore(tmp_path / "store"))
    proj.write()
    return proj


def _edit(path: Path, extra: str = "# edited\n") -> None:
    path.write_text(path.read_text() + extra)


def _reverse_mappings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reverse_mappings(v) for k, v in reversed(list(value.items()))}
    if isinstance(value, list):
        return [_reverse_mappings(v) for v in value]
    return value


def _move_project(p: Project) -> None:
    new_root = p.root.parent / "moved" / "elsewhere" / "project"
    shutil.copytree(p.root, new_root)
    shutil.rmtree(p.root)
    p.root = new_root


def _touch_everything(p: Project) -> None:
    past = 1_700_000_000
    for path in [*p.steps.iterdir(), p.root / "data.csv"]:
        os.utime(path, (past, past))


def _add_ignored_files(p: Project) -> None:
    (p.steps / "__pycache__").mkdir()
    (p.steps / "__pycache__" / "common.cpython-312.pyc").write_bytes(b"\x00bytecode")
    (p.steps / "stray.pyc").write_bytes(b"\x00bytecode")
    (p.steps / ".git").mkdir()
    (p.steps / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (p.steps / ".DS_Store").write_bytes(b"\x00")


def _rewrite_param(name: str, value: Any) -> Callable[[Project], None]:
    def change(p: Project) -> None:
        p.params[name] = value

    return change


Change = Callable[[Project], None]

# (id, step, change): the change must give the step a different key.
MUST_RERUN: list[tuple[str, str, Change]] = [
    ("argv", "prepare", lambda p: p.step_spec("prepare")["command"].append("--verbose")),
    ("argv-order", "prepare", lambda p: p.step_spec("prepare")["command"].reverse()),
    ("used-param-in-template", "prepare", _rewrite_param("seed", 2)),
    ("used-param-in-template-downstream", "train", _rewrite_param("lr", 0.2)),
    ("param-listed-in-step-params", "train", _rewrite_param("epochs", 4)),
    ("run-date-referenced", "report", lambda p: setattr(p, "run_date", "2026-11-03")),
    ("included-script-content", "prepare", lambda p: _edit(p.steps / "prepare.py")),
    ("shared-included-file-content", "prepare", lambda p: _edit(p.steps / "common.py")),
    ("shared-included-file-content-other-step", "train", lambda p: _edit(p.steps / "common.py")),
    ("included-script-renamed", "report", lambda p: (p.steps / "report.py").rename(p.steps / "report2.py")),
    ("new-file-in-whole-folder-source", "report", lambda p: (p.steps / "helpers.py").write_text("X = 1\n")),
    ("script-made-executable", "prepare", lambda p: (p.steps / "prepare.py").chmod(0o755)),
    ("environment-identity", "prepare", lambda p: setattr(p, "environment", "env-b")),
    ("declared-env-value", "prepare", lambda p: p.step_spec("prepare")["env"].update(MODE="slow")),
    ("declared-env-added", "prepare", lambda p: p.step_spec("prepare")["env"].update(EXTRA="1")),
    ("external-input-content", "prepare", lambda p: _edit(p.root / "data.csv", "3,4\n")),
    ("upstream-output-content", "train", lambda p: p.dataset.update({"train.csv": "x,y\n1,3\n"})),
    ("upstream-output-file-added", "train", lambda p: p.dataset.update({"extra.csv": ""})),
    ("pipeline-cache-version", "prepare", lambda p: p.spec.update(cache_version="2")),
    ("step-cache-version", "prepare", lambda p: p.step_spec("prepare").update(cache={"version": "2"})),
    ("declared-output-added", "prepare", lambda p: p.step_spec("prepare")["outputs"].append("stats")),
    (
        "declared-output-renamed",
        "report",
        lambda p: p.step_spec("report").update(outputs=["summary"]),
    ),
]

# (id, step, change): the change must leave the step's key as it was.
MUST_HIT: list[tuple[str, str, Change]] = [
    ("retries", "prepare", lambda p: p.step_spec("prepare").update(retries=5)),
    ("timeout", "prepare", lambda p: p.step_spec("prepare").update(timeout="2h")),
    ("retry-delay", "prepare", lambda p: p.step_spec("prepare").update(retry_delay="5m")),
    ("pool", "prepare", lambda p: p.step_spec("prepare").update(pool="gpu")),
    ("queue", "prepare", lambda p: p.step_spec("prepare").update(queue="big")),
    ("step-description", "prepare", lambda p: p.step_spec("prepare").update(description="Something else.")),
    ("pipeline-description", "prepare", lambda p: p.spec.update(description="Changed.")),
    ("pipeline-name-aka-dag-id", "prepare", lambda p: p.spec.update(name="demo_v2")),
    ("schedule-and-tags", "prepare", lambda p: p.spec.update(schedule="@daily", start_date="2026-01-01", tags=["x"])),
    ("yaml-key-order", "prepare", lambda p: setattr(p, "spec", _reverse_mappings(p.spec))),
    ("yaml-key-order-downstream", "train", lambda p: setattr(p, "spec", _reverse_mappings(p.spec))),
    ("unrelated-param", "prepare", _rewrite_param("unused", "y")),
    ("param-used-by-another-step", "prepare", _rewrite_param("lr", 0.5)),
    ("run-date-not-referenced", "prepare", lambda p: setattr(p, "run_date", "2026-11-03")),
    ("run-date-not-referenced-downstream", "train", lambda p: setattr(p, "run_date", "2030-01-01")),
    ("project-moved", "prepare", _move_project),
    ("project-moved-downstream", "train", _move_project),
    ("project-moved-whole-folder", "report", _move_project),
    ("mtimes-only", "prepare", _touch_everything),
    ("mtimes-only-whole-folder", "report", _touch_everything),
    ("script-outside-include-edited", "prepare", lambda p: _edit(p.steps / "train.py")),
    ("other-step-script-edited", "train", lambda p: _edit(p.steps / "prepare.py")),
    ("file-outside-include-added", "prepare", lambda p: (p.steps / "notes.md").write_text("hi\n")),
    ("ignored-files-added", "report", _add_ignored_files),
    ("upstream-rerun-identical-bytes", "train", lambda p: p.upstream_meta.update(produced_by="run-2", key="k2")),
    ("upstream-was-a-cache-hit", "train", lambda p: p.upstream_meta.update(hit=True, duration_s=12.5)),
    ("after-only-dependency", "report", lambda p: p.step_spec("report").update(after=["prepare"])),
]


@pytest.mark.parametrize(("step", "change"), [c[1:] for c in MUST_RERUN], ids=[c[0] for c in MUST_RERUN])
def test_change_must_rerun(project: Project, step: str, change: Change) -> None:
    before = project.key(step)
    change(project)
    assert project.key(step) != before


@pytest.mark.parametrize(("step", "change"), [c[1:] for c in MUST_HIT], ids=[c[0] for c in MUST_HIT])
def test_change_must_hit(project: Project, step: str, change: Change) -> None:
    before = project.key(step)
    change(project)
    assert project.key(step) == before


def test_key_is_deterministic_and_well_formed(project: Project) -> None:
    first, second = project.fingerprint("train"), project.fingerprint("train")
    assert first.key == second.key
    assert len(first.key) == 64
    assert int(first.key, 16) >= 0
    assert len({project.key("prepare"), project.key("train"), project.key("report")}) == 3


def test_components_describe_what_was_hashed(project: Project) -> None:
    fp = project.fingerprint("train")
    c = fp.components

    # Paths are placeholders; the rendered param value is in the argv.
    assert c.argv == ("python", "train.py", "--data", "<input:dataset>", "--lr", "0.1", "--out", "<output:model>")
    # Used params only: `lr` from the template, `epochs` from `params:`.
    assert c.params == {"epochs": 3, "lr": 0.1}
    assert set(fp.code.files) == {"train.py", "common.py"}
    assert c.code == fp.code.digest
    assert c.environment == "env-a"
    assert c.outputs == ("model",)
    assert c.inputs == {"dataset": fp.inputs["dataset"].digest}
    assert fp.inputs["dataset"].source == "prepare.dataset"
    assert fp.input_paths["dataset"].is_dir()
    assert cache_key(c) == fp.key


def test_external_input_is_recorded_by_path_but_keyed_by_content(project: Project) -> None:
    fp = project.fingerprint("prepare")
    assert fp.inputs["raw"].source == str(project.root / "data.csv")
    assert fp.input_paths["raw"] == project.root / "data.csv"
    assert str(project.root) not in repr(fp.components)


def test_run_date_in_an_env_value_counts(project: Project) -> None:
    project.step_spec("prepare")["env"]["DAY"] = "{{ run_date }}"
    before = project.key("prepare")
    project.run_date = "2026-11-03"
    assert project.key("prepare") != before


def test_explain_change_lists_params_and_code_files(project: Project) -> None:
    old = project.fingerprint("train")
    project.params["lr"] = 0.2
    _edit(project.steps / "train.py")
    new = project.fingerprint("train")

    changes = explain_change(old.components, new.components, old.code.files, new.code.files)

    assert "param `lr` (0.1 → 0.2)" in changes
    assert "code (`train.py`)" in changes
    assert "command" in changes
    assert not any(c.startswith(("environment", "input", "env", "outputs", "cache")) for c in changes)


def test_explain_change_covers_every_component() -> None:
    old = KeyComponents(
        argv=("python", "a.py"),
        env={"A": "1"},
        params={"lr": 0.1},
        code="c1",
        environment="e1",
        inputs={"data": "d1"},
        outputs=("model",),
        salt="/",
    )
    new = KeyComponents(
        argv=("python", "a.py", "-v"),
        env={"A": "2"},
        params={"lr": 0.1, "seed": 1},
        code="c2",
        environment="e2",
        inputs={"data": "d2"},
        outputs=("metrics", "model"),
        salt="2/",
    )
    old_files = {f"f{i}.py": "x" for i in range(7)}
    new_files = {f"f{i}.py": "y" for i in range(7)}

    changes = explain_change(old, new, old_files, new_files)

    assert changes == [
        "command",
        "param `seed` (None → 1)",
        "env `A`",
        "code (`f0.py`, `f1.py`, `f2.py`, `f3.py`, `f4.py` …)",
        "environment",
        "input `data`",
        "outputs",
        "cache version",
    ]
    assert explain_change(old, old, old_files, old_files) == []


def test_repointed_symlinked_code_folder_must_rerun(project: Project) -> None:
    """`steps/lib -> ../shared/v1` switched to `v2` changes the code the step imports."""
    for version in ("v1", "v2"):
        (project.root / "shared" / version).mkdir(parents=True)
        (project.root / "shared" / version / "util.py").write_text(f"VERSION = {version!r}\n")
    (project.steps / "lib").symlink_to("../shared/v1", target_is_directory=True)
    before = project.key("report")

    (project.steps / "lib").unlink()
    (project.steps / "lib").symlink_to("../shared/v2", target_is_directory=True)

    assert project.key("report") != before


def test_code_snapshot_holds_exactly_the_fingerprinted_files(project: Project, tmp_path: Path) -> None:
    pipeline = project.pipeline()
    runtime = StepRuntime(
        pipeline, pipeline.step("prepare"), store=project.store, params={}, run_date="2026-11-02", upstream={}
    )
    dest = tmp_path / "snapshot"

    copied = runtime.snapshot_code(dest)

    assert copied == runtime.code_tree()
    assert sorted(p.name for p in dest.iterdir()) == ["common.py", "prepare.py"]
