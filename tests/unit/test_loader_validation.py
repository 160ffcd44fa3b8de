"""YAML loading and semantic validation: every invalid spec raises a located `SpecError`."""

from __future__ import annotations

import os
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from airflow_mlpipe.durations import format_duration, parse_duration
from airflow_mlpipe.exceptions import SpecError, SpecIssue
from airflow_mlpipe.loader import load_pipeline

HERE = Path(__file__).resolve().parent
WINE = HERE.parents[1] / "dags_examples" / "wine" / "pipeline.yaml"


# -- helpers -------------------------------------------------------------------
@pytest.fixture
def spec_file(tmp_path: Path):
    """Write a (dedented) YAML spec into tmp_path and return its absolute path."""

    def write(text: str, name: str = "pipeline.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


@pytest.fixture
def load_error(spec_file):
    """Load a spec that must be invalid; return the `SpecError` and the spec path."""

    def load(text: str) -> tuple[SpecError, Path]:
        path = spec_file(text)
        with pytest.raises(SpecError) as info:
            load_pipeline(path)
        return info.value, path

    return load


def find_issue(err: SpecError, *, field: str | None = None, step: str | None = None) -> SpecIssue:
    """The one issue at (step, field); fails listing all issues otherwise."""
    found = [i for i in err.issues if (field is None or i.field == field) and (step is None or i.step == step)]
    assert len(found) == 1, f"expected one issue at step={step!r} field={field!r}, got:\n{err}"
    return found[0]


# -- the example and the happy paths ------------------------------------------------
def test_example_pipeline_loads_cleanly() -> None:
    pipeline = load_pipeline(WINE)

    assert pipeline.name == "wine_classifier"
    assert pipeline.step_names == ("prepare", "train", "evaluate", "register")
    assert pipeline.step("evaluate").dependencies() == ("train", "prepare")
    assert pipeline.base_dir == WINE.parent
    assert pipeline.spec_file == str(WINE)
    assert pipeline.source_dir(pipeline.step("train")) == WINE.parent / "steps"
    # `defaults:` reached every step.
    assert {s.timeout for s in pipeline.steps} == {timedelta(minutes=10)}
    assert {s.retries for s in pipeline.steps} == {1}


def test_relative_path_resolves_against_the_calling_file_not_the_cwd(
    spec_file, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = spec_file(
        """
        name: rel
        steps:
          only: {command: [python, x.py]}
        """
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    pipeline = load_pipeline(os.path.relpath(path, HERE))
    example = load_pipeline("../../dags_examples/wine/pipeline.yaml")

    assert pipeline.name == "rel"
    assert pipeline.base_dir == tmp_path
    assert example.base_dir == WINE.parent


def test_name_defaults_to_the_file_stem(spec_file) -> None:
    path = spec_file("steps: {only: {command: [python, x.py]}}", name="nightly_scoring.yaml")
    assert load_pipeline(path).name == "nightly_scoring"


def test_defaults_are_merged_into_steps_and_the_step_wins(spec_file) -> None:
    path = spec_file(
        """
        name: p
        defaults:
          retries: 2
          timeout: 10m
          env: {A: "1", B: "2"}
          cache: {version: v1}
        steps:
          first:
            command: [python, a.py]
            env: {B: "3", C: "4"}
          second:
            command: [python, b.py]
            retries: 0
        """
    )
    pipeline = load_pipeline(path)
    first, second = pipeline.step("first"), pipeline.step("second")

    assert first.env == {"A": "1", "B": "3", "C": "4"}
    assert second.env == {"A": "1", "B": "2"}
    assert (first.retries, second.retries) == (2, 0)
    assert first.timeout == second.timeout == timedelta(minutes=10)
    assert first.cache.version == second.cache.version == "v1"


def test_outputs_list_and_cache_false_shorthands(spec_file) -> None:
    path = spec_file(
        """
        name: p
        steps:
          make:
            command: [python, a.py]
            outputs: [model, metrics]
            cache: false
          keep:
            command: [python, b.py]
        """
    )
    pipeline = load_pipeline(path)
    make, keep = pipeline.step("make"), pipeline.step("keep")

    assert set(make.outputs) == {"model", "metrics"}
    assert make.output("model") == "make.model"
    assert make.cache.enabled is False
    assert keep.cache.enabled is True


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("10m", timedelta(minutes=10)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("90", timedelta(seconds=90)),
        ("90s", timedelta(seconds=90)),
        ("2d", timedelta(days=2)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_durations_in_specs(spec_file, written: str, expected: timedelta) -> None:
    value = written if not written.isdigit() else int(written)
    path = spec_file(
        f"""
        name: p
        steps:
          s:
            command: [python, a.py]
            timeout: {value!r}
            retry_delay: {value!r}
        """
    )
    step = load_pipeline(path).step("s")
    assert step.timeout == expected
    assert step.retry_delay == expected


def test_duration_parse_and_format_round_trip() -> None:
    assert parse_duration(90) == timedelta(seconds=90)
    assert parse_duration(" 1h 30m ") == timedelta(minutes=90)
    assert format_duration(timedelta(hours=1, minutes=30)) == "1h30m"
    assert parse_duration(format_duration(timedelta(days=1, seconds=5))) == timedelta(days=1, seconds=5)
    for bad in ("ten minutes", "10x", "", True, -1):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_invalid_duration_is_located(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        steps:
          a: {command: [python, a.py]}
          s:
            command: [python, a.py]
            timeout: ten minutes
        """
    )
    issue = find_issue(err, step="s", field="timeout")
    assert "`1h30m`" in issue.message


def test_yaml_merge_keys_are_supported(spec_file) -> None:
    """`<<: *anchor` is plain YAML (PyYAML's SafeLoader accepts it); the strict loader must too."""
    path = spec_file(
        """
        name: p
        steps:
          train: &base
            command: [python, train.py]
            retries: 2
            env: {A: "1"}
          tune:
            <<: *base
            command: [python, tune.py]
        """
    )
    tune = load_pipeline(path).step("tune")
    assert tune.command == ("python", "tune.py")
    assert tune.retries == 2
    assert tune.env == {"A": "1"}


# -- YAML-level problems -----------------------------------------------------------
def test_duplicate_step_name_is_detected(load_error) -> None:
    err, path = load_error(
        """
        name: p
        steps:
          prepare:
            command: [python, a.py]
          prepare:
            command: [python, b.py]
        """
    )
    issue = find_issue(err)
    assert issue.file == str(path)
    assert issue.step == "prepare"
    assert issue.field == "name"
    assert "duplicate step name `prepare`" in issue.message
    assert "line 5" in issue.message
    assert "unique" in (issue.hint or "")


def test_duplicate_key_inside_a_step_is_detected_too(load_error) -> None:
    err, path = load_error(
        """
        name: p
        steps:
          prepare:
            command: [python, a.py]
            command: [python, b.py]
        """
    )
    issue = find_issue(err)
    assert issue.file == str(path)
    assert (issue.step, issue.field) == ("prepare", "command")
    assert "duplicate key `command`" in issue.message and "line 5" in issue.message


def test_malformed_yaml_reports_the_line(load_error) -> None:
    err, path = load_error(
        """
        name: p
        steps:
          train:
            command: [python, a.py
            outputs: [x]
        """
    )
    issue = find_issue(err)
    assert issue.file == str(path)
    assert "not valid YAML" in issue.message
    assert "line 5" in issue.message
    assert issue.hint


@pytest.mark.parametrize(
    "text",
    ["- just\n- a list\n", "name: p\n", "name: p\nsteps: {}\n", "name: p\nsteps: [a, b]\n"],
)
def test_file_without_a_steps_mapping(load_error, text: str) -> None:
    err, path = load_error(text)
    assert err.file == str(path)
    assert "steps" in str(err)


# -- shape problems (pydantic) -----------------------------------------------------------
def test_shell_string_command_asks_for_an_argv_list(load_error) -> None:
    err, path = load_error(
        """
        name: p
        steps:
          other: {command: [python, x.py]}
          train:
            command: python train.py --lr 1
        """
    )
    issue = find_issue(err, step="train", field="command")
    assert issue.file == str(path)
    assert "list of arguments" in issue.message
    assert "['python', 'train.py', '--lr', '1']" in issue.message


def test_unknown_field_is_forbidden_with_a_hint(load_error) -> None:
    err, path = load_error(
        """
        name: p
        steps:
          other: {command: [python, x.py]}
          train:
            command: [python, a.py]
            retires: 3
        """
    )
    issue = find_issue(err, step="train", field="retires")
    assert issue.file == str(path)
    assert "not permitted" in issue.message
    assert "spelling" in (issue.hint or "")


def test_unknown_top_level_field(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        shedule: "@daily"
        steps:
          train: {command: [python, a.py]}
        """
    )
    issue = find_issue(err, field="shedule")
    assert issue.step is None
    assert "spelling" in (issue.hint or "")


def test_bad_target_kind_lists_the_allowed_ones(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        steps:
          other: {command: [python, x.py]}
          train:
            command: [python, a.py]
            target: {kind: spaceship}
        """
    )
    issue = find_issue(err, step="train", field="target")
    assert "`local`" in f"{issue.message} {issue.hint}" and "`docker`" in f"{issue.message} {issue.hint}"


def test_docker_target_without_image_names_the_field(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        steps:
          train:
            command: [python, a.py]
            target: docker
        """
    )
    issue = find_issue(err, step="train", field="target.image")
    assert "required" in issue.message.lower()


def test_docker_target_bad_memory_and_user_explain_the_format(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        steps:
          train:
            command: [python, a.py]
            target: {kind: docker, image: x, memory: lots, user: admin}
        """
    )
    assert "512m" in (find_issue(err, step="train", field="target.memory").hint or "")
    assert "uid:gid" in (find_issue(err, step="train", field="target.user").hint or "")


def test_single_step_error_is_not_followed_by_a_spurious_empty_steps_issue(load_error) -> None:
    """A typo in the only step must not also claim that `steps` is empty."""
    err, _ = load_error(
        """
        name: p
        steps:
          train:
            command: [python, a.py]
            retires: 3
        """
    )
    assert [(i.step, i.field) for i in err.issues] == [("train", "retires")], str(err)


# -- semantic problems ---------------------------------------------------------------
def test_unknown_upstream_step_suggests_the_close_name(load_error) -> None:
    err, path = load_error(
        """
        name: p
        steps:
          prepare:
            command: [python, a.py]
            outputs: [dataset]
          train:
            inputs: {dataset: prepar.dataset}
            command: [python, b.py]
        """
    )
    issue = find_issue(err, step="train", field="inputs.dataset")
    assert issue.file == str(path)
    assert "unknown step `prepar`" in issue.message
    assert "did you mean `prepare`" in (issue.hint or "")


def test_unknown_after_step(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        steps:
          prepare: {command: [python, a.py]}
          train:
            after: [prepaer]
            command: [python, b.py]
        """
    )
    issue = find_issue(err, step="train", field="after[0]")
    assert "`prepare`" in (issue.hint or "")


@pytest.mark.parametrize(
    ("ref", "hint"),
    [("prepare.datasets", "did you mean `dataset`"), ("prepare.model", "`dataset`")],
)
def test_output_consumed_but_never_produced(load_error, ref: str, hint: str) -> None:
    err, _ = load_error(
        f"""
        name: p
        steps:
          prepare:
            command: [python, a.py]
            outputs: [dataset]
          train:
            inputs: {{data: {ref}}}
            command: [python, b.py]
        """
    )
    issue = find_issue(err, step="train", field="inputs.data")
    assert f"`{ref.split('.')[1]}` is consumed but step `prepare` never produces it" in issue.message
    assert hint in (issue.hint or "")


def test_output_of_a_step_without_outputs_hints_to_declare_it(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        steps:
          prepare: {command: [python, a.py]}
          train:
            inputs: {data: prepare.dataset}
            command: [python, b.py]
        """
    )
    issue = find_issue(err, step="train", field="inputs.data")
    assert issue.hint == "add `dataset` to the outputs of `prepare`"


def test_cycle_names_its_steps(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        steps:
          a:
            inputs: {x: c.out}
            command: [python, a.py]
            outputs: [out]
          b:
            inputs: {x: a.out}
            command: [python, b.py]
            outputs: [out]
          c:
            inputs: {x: b.out}
            command: [python, c.py]
            outputs: [out]
          d:
            inputs: {x: c.out}
            command: [python, d.py]
        """
    )
    issue = find_issue(err, field="inputs")
    assert "cycle" in issue.message
    assert "`a` → `c` → `b` → `a`" in issue.message
    assert "`d`" not in issue.message
    assert issue.step == "a"


def test_self_dependency(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        steps:
          a:
            inputs: {x: a.out}
            command: [python, a.py]
            outputs: [out]
        """
    )
    issue = find_issue(err, step="a", field="inputs.x")
    assert "own output" in issue.message


@pytest.mark.parametrize(
    ("body", "step", "field", "name"),
    [
        ("pre-pare: {command: [python, a.py]}", "pre-pare", "name", "pre-pare"),
        ("1st: {command: [python, a.py]}", "1st", "name", "1st"),
        ("s: {command: [python, a.py], inputs: {my-data: {path: d.csv}}}", "s", "inputs.my-data", "my-data"),
        ("s: {command: [python, a.py], outputs: [the model]}", "s", "outputs.the model", "the model"),
    ],
)
def test_invalid_identifiers(load_error, body: str, step: str, field: str, name: str) -> None:
    err, _ = load_error(f"name: p\nsteps:\n  {body}\n")
    issue = find_issue(err, step=step, field=field)
    assert f"`{name}` is not a valid" in issue.message
    assert "letters, digits and underscores" in (issue.hint or "")


def test_invalid_pipeline_name_suggests_a_valid_one(load_error) -> None:
    err, _ = load_error("name: wine classifier\nsteps: {s: {command: [python, a.py]}}\n")
    issue = find_issue(err, field="name")
    assert "`wine_classifier`" in (issue.hint or "")


def test_param_in_template_must_be_declared(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        params:
          l_r: {type: number, default: 0.1}
        steps:
          train:
            command: [python, a.py, --lr, "{{ params.lr }}"]
        """
    )
    issue = find_issue(err, step="train", field="command[3]")
    assert "param `lr` is used but not declared" in issue.message
    assert "did you mean `l_r`" in (issue.hint or "")


def test_param_listed_in_step_params_must_be_declared(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        steps:
          train:
            command: [python, a.py]
            params: [lr]
        """
    )
    issue = find_issue(err, step="train", field="params[0]")
    assert "param `lr` is not declared" in issue.message
    assert "declare it under `params:`" in (issue.hint or "")


def test_unknown_template_variable(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        steps:
          train:
            command: [python, a.py, "{{ foo }}"]
        """
    )
    issue = find_issue(err, step="train", field="command[2]")
    assert "unknown template variable `foo`" in issue.message
    assert "`run_date`" in (issue.hint or "")
    assert "`params`" in (issue.hint or "")


def test_external_path_may_not_use_inputs_or_outputs(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        steps:
          train:
            inputs: {raw: {path: "{{ outputs.model }}/x.csv"}}
            outputs: [model]
            command: [python, a.py]
        """
    )
    issue = find_issue(err, step="train", field="inputs.raw.path")
    assert "unknown template variable `outputs`" in issue.message


def test_undeclared_input_and_output_references(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        steps:
          train:
            inputs: {dataset: {path: data.csv}}
            outputs: [model]
            command: [python, a.py, "{{ inputs.datasets }}", "{{ outputs.x }}"]
            env: {OUT: "{{ outputs.modle }}"}
        """
    )
    wrong_input = find_issue(err, step="train", field="command[2]")
    assert "`inputs.datasets` is not an input of this step" in wrong_input.message
    assert "did you mean `dataset`" in (wrong_input.hint or "")
    wrong_output = find_issue(err, step="train", field="command[3]")
    assert "`outputs.x` is not an output of this step" in wrong_output.message
    assert find_issue(err, step="train", field="env.OUT").hint == "did you mean `model`?"


def test_template_syntax_error(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        steps:
          train:
            command: [python, a.py, "{{ params.lr "]
        """
    )
    issue = find_issue(err, step="train", field="command[2]")
    assert issue.message.startswith("template syntax error")
    assert "{{ name }}" in (issue.hint or "")


def test_param_default_outside_min_max(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        params:
          lr: {type: number, default: 5, minimum: 0, maximum: 1}
        steps:
          train: {command: [python, a.py]}
        """
    )
    issue = find_issue(err, field="params.lr.default")
    assert issue.step is None
    assert "maximum" in issue.message
    assert "5" in issue.message


def test_param_default_of_the_wrong_type(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        params:
          epochs: {type: integer, default: "ten"}
        steps:
          train: {command: [python, a.py]}
        """
    )
    assert "not of type 'integer'" in find_issue(err, field="params.epochs.default").message


def test_reserved_param_name(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        params:
          force_rerun: {type: boolean, default: false}
        steps:
          train: {command: [python, a.py]}
        """
    )
    assert "reserved" in find_issue(err, field="params.force_rerun").message


def test_scheduled_pipeline_needs_a_start_date(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        schedule: "@daily"
        steps:
          train: {command: [python, a.py]}
        """
    )
    issue = find_issue(err, field="start_date")
    assert "start_date" in issue.message
    assert "2026-01-01" in (issue.hint or "")


@pytest.mark.parametrize("where", ["step", "pipeline"])
def test_absolute_source_dir(load_error, where: str) -> None:
    source = "source: /opt/code\n" if where == "pipeline" else ""
    step_source = "    source: {dir: /opt/code}\n" if where == "step" else ""
    err, _ = load_error(f"name: p\n{source}steps:\n  train:\n    command: [python, a.py]\n{step_source}")
    issue = find_issue(err, step="train", field="source.dir")
    assert "`/opt/code` is absolute" in issue.message
    assert "relative" in (issue.hint or "")


def test_empty_include(load_error) -> None:
    err, _ = load_error("name: p\nsteps:\n  train: {command: [python, a.py], source: {include: []}}\n")
    assert find_issue(err, step="train", field="source.include")


@pytest.mark.parametrize("name", ["MLPIPE_X", "mlpipe_param_lr", "BAD-NAME", "1ST"])
def test_reserved_or_invalid_env_names(load_error, name: str) -> None:
    err, _ = load_error(
        f"""
        name: p
        steps:
          train:
            command: [python, a.py]
            env: {{{name}: "1", OK_NAME: "2"}}
        """
    )
    issue = find_issue(err, step="train", field=f"env.{name}")
    assert "not an allowed environment variable name" in issue.message
    assert "MLPIPE_" in (issue.hint or "")


def test_several_problems_are_reported_together(load_error) -> None:
    err, path = load_error(
        """
        name: p
        schedule: "@daily"
        steps:
          prepare:
            command: [python, a.py, "{{ foo }}"]
            outputs: [dataset]
          train:
            inputs: {dataset: prepar.dataset}
            params: [lr]
            command: [python, b.py]
          bad-name:
            command: [python, c.py]
        """
    )
    located = {(i.step, i.field) for i in err.issues}
    assert located == {
        (None, "start_date"),
        ("prepare", "command[2]"),
        ("train", "inputs.dataset"),
        ("train", "params[0]"),
        ("bad-name", "name"),
    }
    assert all(i.file == str(path) for i in err.issues)
    assert "(5 problems)" in str(err)


def test_several_shape_problems_are_reported_together(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        steps:
          train:
            command: [python, a.py]
            retires: 3
          score:
            command: python score.py
          ok:
            command: [python, ok.py]
        """
    )
    located = {(i.step, i.field) for i in err.issues}
    assert {("train", "retires"), ("score", "command")} <= located


def test_input_reference_without_a_dot_is_a_spec_error_not_a_crash(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        steps:
          a: {command: [x], outputs: [o]}
          b:
            command: [x]
            inputs: {data: justaname}
        """
    )
    issue = find_issue(err, step="b", field="inputs.data")
    assert "step.output" in f"{issue.message} {issue.hint}"


def test_a_step_can_leave_a_docker_default_for_the_local_target(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(
        textwrap.dedent(
            """
            name: p
            defaults:
              target: {kind: docker, image: "x:1", memory: 1g}
            steps:
              a: {command: [x], target: {kind: local, packages: [numpy]}}
              b: {command: [x], target: {memory: 2g}}
            """
        )
    )
    pipeline = load_pipeline(spec)
    assert pipeline.step("a").target.kind == "local"
    b = pipeline.step("b").target
    assert (b.kind, b.image, b.memory) == ("docker", "x:1", "2g")


def test_docker_user_zero_must_be_spelled_root(load_error) -> None:
    err, _ = load_error(
        """
        name: p
        steps:
          a: {command: [x], target: {kind: docker, image: x, user: "0:0"}}
        """
    )
    assert "root" in (find_issue(err, step="a", field="target.user").hint or "")
