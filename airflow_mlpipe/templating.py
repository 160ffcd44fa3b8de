"""Templates in commands, env values and external paths.

Jinja syntax over a small, closed set of variables. The analysis half runs at
validation time (which params a step uses, which names are unknown); the
rendering half runs only inside tasks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: Names a template may use. `run_date` is the run's date (YYYY-MM-DD): the
#: logical date, or for a manual run without one, the date it was triggered for.
VARIABLES: tuple[str, ...] = ("params", "inputs", "outputs", "run_date")


@lru_cache(maxsize=1)
def _env() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)


@dataclass
class TemplateRefs:
    """What a set of templates refers to: top-level names and `var.attr` pairs."""

    names: set[str] = field(default_factory=set)
    attrs: dict[str, set[str]] = field(default_factory=dict)

    def uses(self, var: str) -> set[str]:
        return self.attrs.get(var, set())


@lru_cache(maxsize=4096)
def _references(text: str) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    """Top-level names and `var.attr` pairs of one template (cached: specs are parsed often)."""
    tree = _env().parse(text)
    names = frozenset(n.name for n in tree.find_all(nodes.Name) if n.ctx == "load")
    pairs = set()
    for access in tree.find_all((nodes.Getattr, nodes.Getitem)):
        base = access.node  # type: ignore[attr-defined]
        if not isinstance(base, nodes.Name):
            continue
        if isinstance(access, nodes.Getattr):
            pairs.add((base.name, access.attr))
        elif isinstance(access, nodes.Getitem) and isinstance(access.arg, nodes.Const):
            pairs.add((base.name, str(access.arg.value)))
    return names, frozenset(pairs)


def analyse(templates: Iterable[str]) -> TemplateRefs:
    """Collect references; raises `TemplateSyntaxError` on malformed templates."""
    refs = TemplateRefs()
    for text in templates:
        if "{" not in text:
            continue
        names, pairs = _references(text)
        refs.names |= names
        for var, attr in pairs:
            refs.attrs.setdefault(var, set()).add(attr)
    return refs


def syntax_error(text: str) -> str | None:
    try:
        analyse([text])
    except TemplateSyntaxError as exc:
        return exc.message or str(exc)
    return None


def render(text: str, variables: Mapping[str, Any]) -> str:
    if "{" not in text:
        return text
    return _env().from_string(text).render(**variables)
