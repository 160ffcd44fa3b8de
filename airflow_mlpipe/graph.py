"""The step graph: order, cycles and pictures (Mermaid, DOT)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from airflow_mlpipe.spec import Pipeline


def edges(pipeline: Pipeline) -> list[tuple[str, str, str]]:
    """(upstream, downstream, label) for every dependency; label names the data, or `after`."""
    result: list[tuple[str, str, str]] = []
    for step in pipeline.steps:
        for name, (up, out) in step.upstream_refs().items():
            result.append((up, step.name, out if out == name else f"{out} → {name}"))
        result += [(up, step.name, "after") for up in step.after]
    return result


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle as a list of names (first == last), or None. Unknown names are ignored."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for up in deps.get(node, ()):
            if up not in deps:
                continue
            if state.get(up) == 1:
                return [*stack[stack.index(up) :], up]
            if up not in state and (found := visit(up)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in deps:
        if node not in state and (found := visit(node)):
            return found
    return None


def topological_order(pipeline: Pipeline) -> list[str]:
    """Step names, upstream first, ties broken by declaration order (stable task order)."""
    deps = {s.name: s.dependencies() for s in pipeline.steps}
    done: list[str] = []
    pending = list(deps)
    while pending:
        ready = [n for n in pending if all(d in done or d not in deps for d in deps[n])]
        if not ready:
            raise ValueError(f"cycle among {pending}")
        done.append(ready[0])
        pending.remove(ready[0])
    return done


def to_mermaid(pipeline: Pipeline) -> str:
    lines = ["flowchart LR"]
    lines += [f"    {s.name}[{s.name}]" for s in pipeline.steps]
    for up, down, label in edges(pipeline):
        arrow = "-.->" if label == "after" else "-->"
        lines.append(f"    {up} {arrow}|{label}| {down}")
    return "\n".join(lines)


def to_dot(pipeline: Pipeline) -> str:
    lines = [f'digraph "{pipeline.name}" {{', "  rankdir=LR;", "  node [shape=box];"]
    lines += [f'  "{s.name}";' for s in pipeline.steps]
    for up, down, label in edges(pipeline):
        style = ", style=dashed" if label == "after" else ""
        lines.append(f'  "{up}" -> "{down}" [label="{label}"{style}];')
    lines.append("}")
    return "\n".join(lines)
