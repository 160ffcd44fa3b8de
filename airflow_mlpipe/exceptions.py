"""The package's error hierarchy.

Every user-facing error names what it is about (file, step, field) in backticks,
says what is allowed and suggests a fix, so that a data scientist can act on it
without reading a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class MlpipeError(Exception):
    """Root of every error raised by airflow-mlpipe."""


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a pipeline spec, located as precisely as we can."""

    message: str
    file: str | None = None
    step: str | None = None
    field: str | None = None
    hint: str | None = None

    def render(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.step:
            where.append(f"step `{self.step}`")
        if self.field:
            where.append(f"field `{self.field}`")
        text = (": ".join([", ".join(where), self.message])) if where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class SpecError(MlpipeError):
    """A pipeline spec is invalid; carries every issue found, not only the first."""

    def __init__(self, issues: Sequence[SpecIssue]) -> None:
        if not issues:
            raise ValueError("SpecError needs at least one issue")
        self.issues: tuple[SpecIssue, ...] = tuple(issues)
        super().__init__(self._render())

    @classmethod
    def single(cls, message: str, **where: str | None) -> SpecError:
        return cls([SpecIssue(message=message, **where)])

    @property
    def file(self) -> str | None:
        return self.issues[0].file

    @property
    def step(self) -> str | None:
        return self.issues[0].step

    @property
    def field(self) -> str | None:
        return self.issues[0].field

    def with_file(self, file: str) -> SpecError:
        """The same issues, located in `file` (for errors found after loading)."""
        return SpecError([SpecIssue(i.message, i.file or file, i.step, i.field, i.hint) for i in self.issues])

    def _render(self) -> str:
        if len(self.issues) == 1:
            return f"Invalid pipeline spec: {self.issues[0].render()}"
        lines = [f"Invalid pipeline spec ({len(self.issues)} problems):"]
        lines += [f"  - {i.render()}" for i in self.issues]
        return "\n".join(lines)


class StoreError(MlpipeError):
    """The artifact store is unreadable, inconsistent or not writable."""


class StepFailed(MlpipeError):
    """A step's process ran and failed; carries the tail of its log."""

    def __init__(self, step: str, message: str, log_tail: Sequence[str] = ()) -> None:
        self.step = step
        self.log_tail = tuple(log_tail)
        text = f"Step `{step}` failed: {message}"
        if self.log_tail:
            text += "\nLast log lines:\n" + "\n".join(f"  | {line}" for line in self.log_tail)
        super().__init__(text)


class StepTimeout(StepFailed):
    """A step ran longer than its `timeout`; its process was killed."""


class InputMissing(MlpipeError):
    """An external input or an upstream output is not where the spec says."""
