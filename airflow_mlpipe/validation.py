"""Semantic checks of a pipeline: every problem found, each located by step and field."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import PurePath

import jsonschema
from jsonschema import Draft202012Validator

from airflow_mlpipe.exceptions import SpecIssue
from airflow_mlpipe.graph import find_cycle
from airflow_mlpipe.spec import External, Pipeline, Step
from airflow_mlpipe.templating import VARIABLES, analyse, syntax_error

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DAG_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Params the compiler adds to every pipeline.
RESERVED_PARAMS = ("force_rerun",)
IDENTIFIER_HELP = "use letters, digits and underscores, not starting with a digit"


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    options = sorted(set(choices))
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if close:
        return f"did you mean `{close[0]}`?"
    if options:
        return "known: " + ", ".join(f"`{o}`" for o in options)
    return None


def check_pipeline(p: Pipeline) -> list[SpecIssue]:
    issues: list[SpecIssue] = []

    def issue(message: str, step: str | None = None, field: str | None = None, hint: str | None = None) -> None:
        issues.append(SpecIssue(message, p.spec_file, step, field, hint))

    if not DAG_ID.match(p.name):
        issue(
            f"`{p.name}` is not a valid pipeline name",
            field="name",
            hint="use letters, digits, `_`, `-` and `.`, e.g. `" + re.sub(r"[^A-Za-z0-9_.-]+", "_", p.name) + "`",
        )
    if p.schedule and p.start_date is None:
        issue("a scheduled pipeline needs a `start_date`", field="start_date", hint="e.g. `start_date: 2026-01-01`")
    _check_params(p, issue)

    names = [s.name for s in p.steps]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            issue(f"duplicate step name `{name}`", step=name, field="name", hint="give every step a unique name")
        seen.add(name)
    for step in p.steps:
        _check_step(p, step, set(names), issue)

    cycle = find_cycle({s.name: s.dependencies() for s in p.steps})
    if cycle:
        issue(
            "steps form a cycle: " + " → ".join(f"`{n}`" for n in cycle),
            step=cycle[0],
            field="inputs",
            hint="a step cannot depend, directly or indirectly, on its own outputs",
        )
    return issues


def _check_params(p: Pipeline, issue) -> None:  # type: ignore[no-untyped-def]
    for name, spec in p.params.items():
        field = f"params.{name}"
        if not IDENTIFIER.match(name):
            issue(f"`{name}` is not a valid param name", field=field, hint=IDENTIFIER_HELP)
        if name in RESERVED_PARAMS:
            issue(f"`{name}` is reserved by airflow-mlpipe", field=field, hint="choose another name")
        # The schema is ours and valid by construction: validate the value without re-checking it.
        error = jsonschema.exceptions.best_match(Draft202012Validator(spec.json_schema()).iter_errors(spec.default))
        if error is not None:
            issue(
                f"default {spec.default!r} does not fit the param's schema: {error.message}", field=f"{field}.default"
            )


def _check_step(p: Pipeline, step: Step, names: set[str], issue) -> None:  # type: ignore[no-untyped-def]
    s = step.name
    if not IDENTIFIER.match(s):
        issue(f"`{s}` is not a valid step name", step=s, field="name", hint=IDENTIFIER_HELP)
    for kind, keys in (("input", step.inputs), ("output", step.outputs)):
        for key in keys:
            if not IDENTIFIER.match(key):
                issue(f"`{key}` is not a valid {kind} name", step=s, field=f"{kind}s.{key}", hint=IDENTIFIER_HELP)
    for key in step.env:
        if not ENV_NAME.match(key) or key.upper().startswith("MLPIPE_"):
            issue(
                f"`{key}` is not an allowed environment variable name",
                step=s,
                field=f"env.{key}",
                hint="use letters, digits and `_`; the `MLPIPE_` prefix is reserved",
            )

    for key, ref in step.inputs.items():
        field = f"inputs.{key}"
        if isinstance(ref, External):
            if not ref.path.strip():
                issue("external input has an empty `path`", step=s, field=f"{field}.path")
            continue
        if ref.count(".") != 1:
            issue(
                f"`{ref}` is not a reference to another step's output",
                step=s,
                field=field,
                hint="write `step.output`, or `{path: ...}` for external data",
            )
            continue
        up, out = ref.split(".")
        if up == s:
            issue(f"step `{s}` cannot consume its own output `{out}`", step=s, field=field)
        elif up not in names:
            issue(f"unknown step `{up}` in `{ref}`", step=s, field=field, hint=did_you_mean(up, names))
        else:
            produced = p.step(up).outputs
            if out not in produced:
                issue(
                    f"output `{out}` is consumed but step `{up}` never produces it",
                    step=s,
                    field=field,
                    hint=did_you_mean(out, produced) or f"add `{out}` to the outputs of `{up}`",
                )
    for i, up in enumerate(step.after):
        if up == s:
            issue(f"step `{s}` cannot run after itself", step=s, field=f"after[{i}]")
        elif up not in names:
            issue(f"unknown step `{up}`", step=s, field=f"after[{i}]", hint=did_you_mean(up, names))
    for i, name in enumerate(step.params):
        if name not in p.params:
            issue(f"param `{name}` is not declared", step=s, field=f"params[{i}]", hint=_declare_hint(name, p))
    if step.timeout is not None and step.timeout.total_seconds() <= 0:
        issue("`timeout` must be positive", step=s, field="timeout")
    src = step.source.dir or p.source
    if PurePath(src).is_absolute():
        issue(
            f"source dir `{src}` is absolute",
            step=s,
            field="source.dir",
            hint="make it relative to the spec file, so the cache key does not depend on the checkout",
        )
    if not step.source.include:
        issue("`source.include` is empty", step=s, field="source.include", hint="e.g. `[train.py]`")
    _check_templates(p, step, issue)


def _declare_hint(name: str, p: Pipeline) -> str:
    close = did_you_mean(name, p.params) if p.params else None
    return close or f"declare it under `params:` with a type and a default, e.g. `{name}: {{type: number, default: 1}}`"


def _check_templates(p: Pipeline, step: Step, issue) -> None:  # type: ignore[no-untyped-def]
    s = step.name
    located: list[tuple[str, str, tuple[str, ...]]] = [
        (f"command[{i}]", arg, VARIABLES) for i, arg in enumerate(step.command)
    ]
    located += [(f"env.{k}", v, VARIABLES) for k, v in step.env.items()]
    # External paths are resolved before the step has staging dirs: params and date only.
    located += [(f"inputs.{k}.path", v.path, ("params", "run_date")) for k, v in step.externals().items()]
    for field, text, allowed in located:
        error = syntax_error(text)
        if error:
            issue(f"template syntax error: {error}", step=s, field=field, hint="templates use `{{ name }}`")
            continue
        refs = analyse([text])
        for name in sorted(refs.names - set(allowed)):
            issue(
                f"unknown template variable `{name}`",
                step=s,
                field=field,
                hint="allowed: " + ", ".join(f"`{a}`" for a in allowed),
            )
        for name in sorted(refs.uses("params") - set(p.params)):
            issue(f"param `{name}` is used but not declared", step=s, field=field, hint=_declare_hint(name, p))
        for name in sorted(refs.uses("inputs") - set(step.inputs)):
            issue(
                f"`inputs.{name}` is not an input of this step",
                step=s,
                field=field,
                hint=did_you_mean(name, step.inputs) or "declare it under `inputs:`",
            )
        for name in sorted(refs.uses("outputs") - set(step.outputs)):
            issue(
                f"`outputs.{name}` is not an output of this step",
                step=s,
                field=field,
                hint=did_you_mean(name, step.outputs) or "declare it under `outputs:`",
            )


def used_params(p: Pipeline, step: Step) -> tuple[str, ...]:
    """Params whose values can change the step's outputs: referenced or exposed."""
    texts = list(step.command) + list(step.env.values()) + [e.path for e in step.externals().values()]
    refs = analyse(texts).uses("params")
    return tuple(sorted((refs | set(step.params)) & set(p.params)))
