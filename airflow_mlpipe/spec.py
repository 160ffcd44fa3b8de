"""The pipeline model: frozen pydantic models shared by the YAML and Python surfaces.

Construction checks the shape of a spec; `Pipeline.check()` (run by the loader
and by `to_dag`) checks its meaning: names, references, cycles, templates.
"""

from __future__ import annotations

import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, PlainSerializer, field_validator

from airflow_mlpipe.durations import format_duration, parse_duration

if TYPE_CHECKING:
    from airflow.sdk import DAG

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration, json_schema_input_type=float | str),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]

#: Files never part of a step's code snapshot.
DEFAULT_IGNORE: tuple[str, ...] = (
    ".git",
    ".hg",
    "__pycache__",
    "*.pyc",
    ".ipynb_checkpoints",
    ".DS_Store",
    ".venv",
    ".mypy_cache",
    ".pytest_cache",
)

ParamType = Literal["string", "integer", "number", "boolean", "array", "object"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ParamSpec(_Frozen):
    """A pipeline parameter; becomes an `airflow.sdk.Param` and a field of the trigger form."""

    type: ParamType
    default: JsonValue
    description: str | None = None
    title: str | None = None
    enum: tuple[JsonValue, ...] | None = None
    minimum: int | float | None = None
    maximum: int | float | None = None

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": self.type}
        if self.enum is not None:
            schema["enum"] = list(self.enum)
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return schema


class External(_Frozen):
    """Data from outside the pipeline: a local file or directory (templated, relative to the spec)."""

    path: str


class OutputSpec(_Frozen):
    """An output of a step: a directory the step writes into, stored by content hash."""

    description: str | None = None


class SourceSpec(_Frozen):
    """The step's code snapshot: files of `dir` matching `include` and not `exclude`.

    Narrow `include` per step when steps share a folder, so editing one script
    re-runs only the step that uses it.
    """

    dir: str | None = None
    include: tuple[str, ...] = ("**",)
    exclude: tuple[str, ...] = ()


class LocalTarget(_Frozen):
    """Run the step as a subprocess on the worker (the embedded default)."""

    kind: Literal["local"] = "local"
    #: Interpreter that replaces a leading `python` in the command; the worker's own by default.
    python: str | None = None
    #: Distributions whose versions identify the environment; all installed ones when unset.
    packages: tuple[str, ...] | None = None


class DockerTarget(_Frozen):
    """Run the step in a container on a Docker Engine: no network and a non-root user by default."""

    kind: Literal["docker"] = "docker"
    image: str
    #: `if_missing` pulls only when the image is not local; `never` fails instead; `always` pulls.
    pull: Literal["if_missing", "always", "never"] = "if_missing"
    #: `none` (default), `host`, or the name of a Docker network.
    network: str = "none"
    #: `root`, or a non-zero `uid[:gid]`; unset runs as the worker's user, or as `[mlpipe] docker_user`
    #: for a root worker.
    user: str | None = Field(default=None, pattern=r"^(root|[1-9]\d*(:\d+)?)$")
    cpus: float | None = Field(default=None, gt=0)
    #: Memory limit with a unit, e.g. `512m`, `4g` (swap is not allowed beyond it).
    memory: str | None = Field(default=None, pattern=r"^\d+(\.\d+)?[bkmgBKMG]?$")
    shm_size: str | None = Field(default=None, pattern=r"^\d+(\.\d+)?[bkmgBKMG]?$")
    #: A number of GPUs (`-1` for all), or a list of device ids.
    gpus: int | tuple[str, ...] | None = None
    #: Docker daemon address; default `DOCKER_HOST` or the local socket.
    docker_url: str | None = None
    #: Airflow connection with registry credentials (host = registry, login, password).
    docker_conn_id: str | None = None


def _target_shorthand(value: object) -> object:
    return {"kind": value} if isinstance(value, str) else value


def _cache_shorthand(value: object) -> object:
    return {"enabled": value} if isinstance(value, bool) else value


def _outputs_shorthand(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return {name: {} for name in value}
    return value


class CachePolicy(_Frozen):
    """`cache: false` always runs; `max_age` ignores older results; `version` salts the key."""

    enabled: bool = True
    max_age: Duration | None = None
    version: str = ""
    #: Re-hash cached outputs on every hit instead of only checking they exist.
    verify: bool = False


Input = str | External


class Step(_Frozen):
    """One unit of work: a command run on a target, from inputs to outputs."""

    name: str
    description: str | None = None
    command: tuple[str, ...] = Field(min_length=1)
    inputs: dict[str, Input] = Field(default_factory=dict)
    outputs: Annotated[
        dict[str, OutputSpec],
        BeforeValidator(_outputs_shorthand, json_schema_input_type=list[str] | dict[str, OutputSpec]),
    ] = Field(default_factory=dict)
    #: Ordering-only dependencies: run after these steps, without using their outputs.
    after: tuple[str, ...] = ()
    #: Params exposed to the process as `MLPIPE_PARAM_<NAME>` (template references count as used too).
    params: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    source: SourceSpec = SourceSpec()
    target: Annotated[
        LocalTarget | DockerTarget,
        Field(discriminator="kind"),
        BeforeValidator(_target_shorthand, json_schema_input_type=Literal["local"] | LocalTarget | DockerTarget),
    ] = LocalTarget()
    retries: int = Field(default=0, ge=0)
    retry_delay: Duration = timedelta(seconds=30)
    timeout: Duration | None = None
    cache: Annotated[CachePolicy, BeforeValidator(_cache_shorthand, json_schema_input_type=bool | CachePolicy)] = (
        CachePolicy()
    )
    pool: str | None = None
    queue: str | None = None

    @field_validator("command", mode="before")
    @classmethod
    def _argv_only(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError(f"`command` must be a list of arguments, not a shell string; write e.g. {value.split()!r}")
        return value

    def output(self, name: str) -> str:
        """A reference to one of this step's outputs, for another step's `inputs`."""
        return f"{self.name}.{name}"

    def upstream_refs(self) -> dict[str, tuple[str, str]]:
        """Input name -> (upstream step, output) for inputs that come from other steps.

        Malformed references (not `step.output`) are left out; validation reports them.
        """
        refs: dict[str, tuple[str, str]] = {}
        for name, ref in self.inputs.items():
            if isinstance(ref, str) and ref.count(".") == 1:
                up, out = ref.split(".")
                refs[name] = (up, out)
        return refs

    def externals(self) -> dict[str, External]:
        return {k: v for k, v in self.inputs.items() if isinstance(v, External)}

    def dependencies(self) -> tuple[str, ...]:
        """Steps this one waits for: data dependencies first, then ordering-only ones."""
        deps = [up for up, _ in self.upstream_refs().values()]
        deps += list(self.after)
        return tuple(dict.fromkeys(deps))


class Pipeline(_Frozen):
    """A named graph of steps with params; compiles to one Airflow DAG."""

    name: str
    description: str | None = None
    schedule: str | None = None
    start_date: date | datetime | None = None
    catchup: bool = False
    tags: tuple[str, ...] = ()
    max_active_runs: int | None = Field(default=None, ge=1)
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    #: Default code folder for steps, relative to `base_dir`.
    source: str = "."
    #: Salts every step's cache key: bump it to recompute the whole pipeline.
    cache_version: str = ""
    steps: tuple[Step, ...] = Field(min_length=1)
    #: Directory relative paths are resolved against: the spec file's folder.
    base_dir: Path | None = None
    #: Where the spec came from, for error messages.
    spec_file: str | None = None

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)

    def check(self) -> Pipeline:
        """Raise `SpecError` listing every semantic problem; return self when valid."""
        from airflow_mlpipe.exceptions import SpecError
        from airflow_mlpipe.validation import check_pipeline

        issues = check_pipeline(self)
        if issues:
            raise SpecError(issues)
        return self

    def source_dir(self, step: Step) -> Path:
        base = self.base_dir or Path.cwd()
        return (base / (step.source.dir or self.source)).resolve()

    def on_local_target(self) -> Pipeline:
        """The same pipeline with every step on the local target (a machine without Docker)."""
        return self.model_copy(
            update={"steps": tuple(s.model_copy(update={"target": LocalTarget()}) for s in self.steps)}
        )

    def to_dag(self, dag_id: str | None = None, **dag_kwargs: Any) -> DAG:
        """Compile into an Airflow DAG (pure: no I/O beyond what the spec already holds)."""
        from airflow_mlpipe.compiler import compile_pipeline

        pipeline = self
        if self.base_dir is None:
            # The Python surface: paths are relative to the file that calls to_dag().
            caller = Path(sys._getframe(1).f_code.co_filename).resolve().parent
            pipeline = self.model_copy(update={"base_dir": caller})
        return compile_pipeline(pipeline, dag_id=dag_id, **dag_kwargs)
