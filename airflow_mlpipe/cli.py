"""The `mlpipe` command line: validate, compile, graph, schema, run.

Exit codes: 0 ok, 1 the pipeline ran and failed, 2 the spec or the command line is invalid.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from airflow_mlpipe.exceptions import SpecError
from airflow_mlpipe.loader import load_pipeline, yaml_json_schema
from airflow_mlpipe.version import __version__

EXIT_FAILED = 1
EXIT_INVALID = 2


def _validate(args: argparse.Namespace) -> int:
    status = 0
    for file in args.files:
        try:
            pipeline = load_pipeline(Path(file).resolve())
        except SpecError as exc:
            print(exc, file=sys.stderr)
            status = EXIT_INVALID
            continue
        print(f"{file}: ok — pipeline `{pipeline.name}`, {len(pipeline.steps)} steps, {len(pipeline.params)} params")
    return status


def _compile(args: argparse.Namespace) -> int:
    pipeline = load_pipeline(Path(args.file).resolve())
    dag = pipeline.to_dag(dag_id=args.dag_id)
    print(f"DAG `{dag.dag_id}`  schedule={pipeline.schedule}  params={sorted(dag.params.keys())}")
    for task in dag.topological_sort():  # type: ignore[no-untyped-call]
        ups = ", ".join(sorted(task.upstream_task_ids)) or "-"
        rule = getattr(task.trigger_rule, "value", task.trigger_rule)
        print(f"  {task.task_id:<28} {type(task).__name__:<20} trigger_rule={rule:<12} after: {ups}")
    return 0


def _graph(args: argparse.Namespace) -> int:
    from airflow_mlpipe.graph import to_dot, to_mermaid

    pipeline = load_pipeline(Path(args.file).resolve())
    print(to_dot(pipeline) if args.format == "dot" else to_mermaid(pipeline))
    return 0


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(yaml_json_schema(), indent=2))
    return 0


def _run(args: argparse.Namespace) -> int:
    from airflow_mlpipe.runner import ParamError, run_pipeline, split_params

    spec = Path(args.file).resolve()
    try:
        raw = split_params(args.param)
    except ParamError as exc:
        print(f"mlpipe run: {exc}", file=sys.stderr)
        return EXIT_INVALID
    conf: dict[str, object] = {"force_rerun": True} if args.force else {}
    try:
        logical_date = datetime.strptime(args.date, "%Y-%m-%d").replace(tzinfo=timezone.utc) if args.date else None
    except ValueError:
        print(f"mlpipe run: `--date {args.date}` is not a date; write YYYY-MM-DD, e.g. 2026-11-02", file=sys.stderr)
        return EXIT_INVALID
    home = Path(args.home or os.environ.get("MLPIPE_HOME") or Path.home() / ".mlpipe").expanduser().resolve()
    try:
        report = run_pipeline(
            spec,
            conf=conf,
            cli_params=raw,
            home=home,
            store=args.store,
            logical_date=logical_date,
            verbose=args.verbose,
            local=args.local,
        )
    except ParamError as exc:
        print(f"mlpipe run: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(report.table())
    return 0 if report.ok else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlpipe", description="ML pipelines on Apache Airflow.")
    parser.add_argument("--version", action="version", version=f"airflow-mlpipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check pipeline files; exit 2 when one is invalid")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=_validate)

    p = sub.add_parser("compile", help="compile to an Airflow DAG and print its task graph")
    p.add_argument("file")
    p.add_argument("--dag-id")
    p.set_defaults(func=_compile)

    p = sub.add_parser("graph", help="print the step graph as Mermaid or DOT")
    p.add_argument("file")
    p.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    p.set_defaults(func=_graph)

    p = sub.add_parser("schema", help="print the JSON Schema of the YAML format")
    p.set_defaults(func=_schema)

    p = sub.add_parser("run", help="run the pipeline once through Airflow, in this process")
    p.add_argument("file", help="a pipeline YAML file, or a Python DAG file")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE", help="set a param")
    p.add_argument("--date", help="logical date YYYY-MM-DD (default: none, like a manual trigger)")
    p.add_argument("--force", action="store_true", help="recompute every step (force_rerun)")
    p.add_argument("--local", action="store_true", help="run every step on the local target (no Docker)")
    p.add_argument("--home", help="private Airflow home and store (default: $MLPIPE_HOME or ~/.mlpipe)")
    p.add_argument("--store", help="artifact store root (default: $AIRFLOW__MLPIPE__STORE or HOME/store)")
    p.add_argument("-v", "--verbose", action="store_true", help="show Airflow's and the steps' logs")
    p.set_defaults(func=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
