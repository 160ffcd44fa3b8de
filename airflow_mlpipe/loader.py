"""The YAML surface: read a pipeline file into the same model the Python API builds."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from airflow_mlpipe.exceptions import SpecError, SpecIssue
from airflow_mlpipe.spec import Pipeline

_MERGE_TAG = "tag:yaml.org,2002:merge"
#: libyaml's parser when PyYAML has it (several times faster: DAG files are parsed constantly).
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _find_duplicate(
    node: yaml.Node, path: tuple[str, ...], seen_nodes: set[int]
) -> tuple[tuple[str, ...], str, int] | None:
    """(parent path, key, line) of the first repeated mapping key: PyYAML keeps only the last."""
    if id(node) in seen_nodes:
        return None
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = str(key_node.value)
            if key in keys:
                return path, key, key_node.start_mark.line + 1
            keys.add(key)
            if found := _find_duplicate(value_node, (*path, key), seen_nodes):
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            if found := _find_duplicate(item, (*path, f"[{i}]"), seen_nodes):
                return found
    return None


def _parse_yaml(text: str, file: str) -> Any:
    try:
        loader = _SafeLoader(text)
        try:
            node = loader.get_single_node()
            duplicate = _find_duplicate(node, (), set()) if node is not None else None
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError.single(
            f"not valid YAML{where}: {problem}", file=file, hint="check indentation and quoting"
        ) from None
    if duplicate is not None:
        path, key, line = duplicate
        if path == ("steps",):
            raise SpecError.single(
                f"duplicate step name `{key}` (again at line {line})",
                file=file,
                step=key,
                field="name",
                hint="YAML keeps only the last of two equal keys; give every step a unique name",
            )
        in_step = len(path) >= 2 and path[0] == "steps"
        field = ".".join((*path[2:], key) if in_step else (*path, key)).replace(".[", "[")
        raise SpecError.single(
            f"duplicate key `{key}` (again at line {line})",
            file=file,
            step=path[1] if in_step else None,
            field=field,
            hint="YAML keeps only the last of two equal keys; remove or merge one of them",
        )
    return data


def _target_kind(value: Any) -> Any:
    return value if isinstance(value, str) else value.get("kind") if isinstance(value, Mapping) else None


def _merge_defaults(defaults: Mapping[str, Any], step: Mapping[str, Any]) -> dict[str, Any]:
    """Step fields over default fields; mappings merge one level (a target only of the same kind)."""
    merged = dict(defaults)
    for key, value in step.items():
        same_kind = key != "target" or _target_kind(value) in (None, _target_kind(merged.get(key)))
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) and same_kind:
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def pipeline_from_mapping(data: Any, *, file: str, base_dir: Path) -> Pipeline:
    """Build and check a Pipeline from parsed YAML/JSON; every error is a `SpecError`."""
    if not isinstance(data, Mapping):
        raise SpecError.single("the file must hold a mapping with `name` and `steps`", file=file)
    data = dict(data)
    defaults = data.pop("defaults", {}) or {}
    steps = data.get("steps")
    if not isinstance(defaults, Mapping):
        raise SpecError.single("`defaults` must be a mapping of step fields", file=file, field="defaults")
    if not isinstance(steps, Mapping) or not steps:
        raise SpecError.single(
            "`steps` must be a non-empty mapping of step name to step",
            file=file,
            field="steps",
            hint="e.g. `steps: {train: {command: [python, train.py]}}`",
        )
    step_names = [str(k) for k in steps]
    step_list = []
    for name, body in steps.items():
        if not isinstance(body, Mapping):
            raise SpecError.single("a step must be a mapping with at least `command`", file=file, step=str(name))
        step_list.append({**_merge_defaults(defaults, body), "name": str(name)})
    data["steps"] = step_list
    data.setdefault("name", Path(file).stem)
    data["base_dir"] = base_dir
    data["spec_file"] = file
    try:
        pipeline = Pipeline.model_validate(data)
    except ValidationError as exc:
        raise _spec_error(exc, file, step_names) from None
    return pipeline.check()


def load_pipeline(path: str | Path) -> Pipeline:
    """Read, validate and return the pipeline in a YAML file.

    A relative `path` is taken relative to the file that calls this function (a DAG
    file), not to the worker's working directory, which Airflow does not fix.
    """
    path = Path(path)
    if not path.is_absolute():
        caller = sys._getframe(1).f_code.co_filename
        if caller and not caller.startswith("<"):
            path = Path(caller).resolve().parent / path
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError.single(f"cannot read the pipeline file: {exc.strerror}", file=file) from None
    return pipeline_from_mapping(_parse_yaml(text, file), file=file, base_dir=path.resolve().parent)


def _spec_error(exc: ValidationError, file: str, step_names: list[str]) -> SpecError:
    issues = []
    errors = exc.errors()
    inside_steps = any(len(e["loc"]) > 1 and e["loc"][0] == "steps" for e in errors)
    for err in errors:
        loc = list(err["loc"])
        if inside_steps and loc == ["steps"] and err["type"] == "too_short":
            continue  # pydantic's echo of a step that failed: the step's own error says why
        step = None
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            step = step_names[loc[1]] if loc[1] < len(step_names) else None
            loc = loc[2:]
        # Drop pydantic's union/tag markers so the field reads like the YAML.
        parts = [
            str(p)
            for i, p in enumerate(loc)
            if not (isinstance(p, str) and ("[" in p or p in ("str", "External")))
            and not (i > 0 and loc[i - 1] == "target" and p in ("local", "docker"))
        ]
        field = ".".join(parts).replace(".[", "[") or None
        message = err["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        hint = _hint_for(err)
        issues.append(SpecIssue(message, file, step, field, hint))
    return SpecError(issues)


def _hint_for(err: Any) -> str | None:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "remove it, or check its spelling against `mlpipe schema`"
    if kind == "missing":
        return "add it"
    if kind in ("literal_error", "union_tag_invalid") and err["loc"][-1] in ("kind", "target"):
        return "allowed targets: `local`, `docker`"
    if kind == "string_pattern_mismatch" and err["loc"][-1] in ("memory", "shm_size"):
        return "a size with a unit, e.g. `512m` or `4g`"
    if kind == "string_pattern_mismatch" and err["loc"][-1] == "user":
        return "`root`, or a numeric non-zero `uid:gid` such as `1000:1000` (root only as `user: root`)"
    return None


def yaml_json_schema() -> dict[str, Any]:
    """JSON Schema of the YAML format (steps as a mapping, `defaults`), for editor completion."""
    schema = Pipeline.model_json_schema(mode="validation")
    defs = schema["$defs"]
    step = dict(defs["Step"])
    step["properties"] = {k: v for k, v in step["properties"].items() if k != "name"}
    step["required"] = [r for r in step.get("required", []) if r != "name"]
    defs["Step"] = step
    defs["StepDefaults"] = {
        "type": "object",
        "description": "Fields merged into every step (a step's own value wins; mappings merge).",
        "properties": step["properties"],
        "additionalProperties": False,
    }
    props = {k: v for k, v in schema["properties"].items() if k not in ("base_dir", "spec_file")}
    props["steps"] = {
        "type": "object",
        "description": "Steps by name; edges come from `inputs` (`step.output`) and `after`.",
        "additionalProperties": {"$ref": "#/$defs/Step"},
        "minProperties": 1,
    }
    props["defaults"] = {"$ref": "#/$defs/StepDefaults"}
    schema["properties"] = props
    schema["required"] = ["steps"]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "airflow-mlpipe pipeline"
    return schema
