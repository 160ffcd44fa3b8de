"""The cache key: a pure function of exactly what can change a step's outputs.

See docs/cache.md for the table of what changes the key and what must not.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, JsonValue

from airflow_mlpipe.fingerprint import hash_bytes

#: Bump when the meaning of a component changes, so old manifests stop matching.
KEY_FORMAT = 1


class KeyComponents(BaseModel):
    """Everything a step's outputs may depend on, already reduced to plain values."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The command after rendering, with input/output paths as stable placeholders.
    argv: tuple[str, ...]
    #: Declared env values after rendering (same placeholders).
    env: dict[str, str]
    #: Values of the params the step uses (referenced in templates or listed in `params`).
    params: dict[str, JsonValue]
    #: Digest of the step's code snapshot (content and relative paths only).
    code: str
    #: Execution environment identity: image digest, or interpreter and packages.
    environment: str
    #: Input name -> content digest (external data or upstream output).
    inputs: dict[str, str]
    #: Declared output names: a renamed output is a different result.
    outputs: tuple[str, ...]
    #: Pipeline `cache_version` and step `cache.version`, joined.
    salt: str


def cache_key(components: KeyComponents) -> str:
    """Hex BLAKE3 of the canonical JSON of the components (64 characters)."""
    payload: dict[str, Any] = {"format": KEY_FORMAT, **components.model_dump(mode="json")}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hash_bytes(canonical.encode())


def explain_change(
    old: KeyComponents, new: KeyComponents, old_code_files: dict[str, str], new_code_files: dict[str, str]
) -> list[str]:
    """Human-readable list of what differs between two keys' components."""
    changes: list[str] = []
    if old.argv != new.argv:
        changes.append("command")
    for name in sorted(set(old.params) | set(new.params)):
        if old.params.get(name) != new.params.get(name):
            changes.append(f"param `{name}` ({old.params.get(name)!r} → {new.params.get(name)!r})")
    for name in sorted(set(old.env) | set(new.env)):
        if old.env.get(name) != new.env.get(name):
            changes.append(f"env `{name}`")
    if old.code != new.code:
        files = sorted(
            f for f in set(old_code_files) | set(new_code_files) if old_code_files.get(f) != new_code_files.get(f)
        )
        shown = ", ".join(f"`{f}`" for f in files[:5]) + (" …" if len(files) > 5 else "")
        changes.append(f"code ({shown})" if files else "code")
    if old.environment != new.environment:
        changes.append("environment")
    for name in sorted(set(old.inputs) | set(new.inputs)):
        if old.inputs.get(name) != new.inputs.get(name):
            changes.append(f"input `{name}`")
    if old.outputs != new.outputs:
        changes.append("outputs")
    if old.salt != new.salt:
        changes.append("cache version")
    return changes
