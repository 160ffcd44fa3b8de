"""Per-step overhead of the Docker target against Airflow's `DockerOperator`, same run.

`python benchmarks/bench_docker_overhead.py --out docs/benchmarks.md` runs the same trivial container (`true`,
no network, removed afterwards) with the package's Docker target and with the Airflow Docker provider's
`DockerOperator`, interleaved in one process: (a) each run operator's `execute()` alone, a fresh operator and
Docker client each time — ours fingerprints the step, runs it and commits one output (`cache: false`, a fresh
store each time) — and (b) one whole step through `dag.test()`, where ours is a check and a run task. "ratio"
is of the medians (target ≤ 1.2× for (a)); "paired" is the median ratio of runs made back to back, less
sensitive to other load on the machine; the last column is the difference of the medians.

Usage: python benchmarks/bench_docker_overhead.py [--repeat 15] [--warmup 2] [--no-dag-test] [--profile] [--out FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

from airflow_mlpipe.runner import migrate_db, prepare_home

METHOD = __doc__.split("\n\n")[1]
IMAGE = "mlpipe-test:latest"
PIPELINE = f"""\
name: ours
source: steps
steps:
  noop:
    target: {{kind: docker, image: "{IMAGE}", pull: never, network: none}}
    command: ["true"]
    outputs: [out]
    cache: false
"""
PEER = {
    "image": IMAGE,
    "command": ["true"],
    "network_mode": "none",
    "auto_remove": "success",
    "mount_tmp_dir": False,
    "docker_url": "unix://var/run/docker.sock",
}
PEER_DAG = f"""\
from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import DAG
with DAG("peer", schedule=None, catchup=False):
    DockerOperator(task_id="run", **{PEER!r})
"""


class Sides:
    """A fresh operator of each side per call (built untimed), returned as its `execute`."""

    def __init__(self, home: Path) -> None:
        self.home, self.spec = home, home / "pipeline.yaml"
        (home / "steps").mkdir()
        (home / "steps" / "noop.py").write_text("pass\n")  # a step always has some code
        self.spec.write_text(PIPELINE)

    def ours(self) -> Callable[[], Any]:
        from airflow_mlpipe.loader import load_pipeline

        dag = load_pipeline(self.spec).to_dag(store=tempfile.mkdtemp(prefix="store-", dir=self.home))
        # The few TaskInstance fields a run operator reads: identity, and XCom push.
        ti = SimpleNamespace(dag_id=dag.dag_id, run_id="manual__bench", task_id="noop.run", try_number=1, pushed={})
        ti.xcom_push = lambda key, value: ti.pushed.update({key: value})
        ctx = {"ti": ti, "params": {}, "logical_date": datetime.now(timezone.utc)}

        def run() -> None:
            dag.task_dict["noop.run"].execute(ctx)
            assert ti.pushed["step_result"]["hit"] is False, "our step was not computed"

        return run

    def peer(self) -> Callable[[], Any]:
        from airflow.providers.docker.operators.docker import DockerOperator

        op = DockerOperator(task_id="peer", **PEER)
        return lambda: op.execute({})  # it reads nothing from the context


def interleave(repeat: int, warmup: int, *makers: Callable[[], Callable[[], Any]]) -> list[list[float]]:
    """Seconds per call of what each maker returns (made untimed); sides alternate as AB BA AB ..."""
    times: list[list[float]] = [[] for _ in makers]
    for i in range(warmup + repeat):
        for side in range(len(makers)) if i % 2 == 0 else reversed(range(len(makers))):
            fn = makers[side]()
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times[side].append(time.perf_counter() - t0)
    return times


def summary(ours: list[float], peer: list[float]) -> tuple[float, ...]:
    """Median and p90 of each side, and the median ratio ours/peer of the runs made back to back."""
    p90 = lambda ts: statistics.quantiles(ts, n=10, method="inclusive")[-1]  # noqa: E731
    paired = statistics.median(o / p for o, p in zip(ours, peer, strict=True))
    return statistics.median(ours), p90(ours), statistics.median(peer), p90(peer), paired


def api_calls(fn: Callable[[], Any]) -> Counter[str]:
    """Docker Engine API requests (method and path) made while `fn` runs, in any thread."""
    from docker.api.client import APIClient

    seen: Counter[str] = Counter()
    original = APIClient.request

    def request(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        path = url.split("/v1.", 1)[1].partition("/")[2] if "/v1." in url else url.rsplit("/", 1)[-1]
        seen[f"{method} /{'/'.join(p if len(p) < 40 else '{id}' for p in path.split('/'))}"] += 1
        return original(self, method, url, *args, **kwargs)

    with patch.object(APIClient, "request", request):
        fn()
    return seen


def profile_ours(sides: Sides, runs: int) -> str:
    """Our package's functions by cumulative time over `runs` executes (main thread only)."""
    prof = cProfile.Profile()
    for _ in range(runs):
        fn = sides.ours()
        prof.enable()
        fn()
        prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats("airflow_mlpipe", 15)
    return out.getvalue().strip()


def dag_test_times(home: Path, repeat: int, warmup: int) -> tuple[list[list[float]], dict[str, float]]:
    """(b): seconds per `dag.test()` of each side, and the median duration Airflow records per task."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    spec = str(home / "pipeline.yaml")
    (dags / "ours.py").write_text(f"from airflow_mlpipe import load_pipeline\ndag = load_pipeline({spec!r}).to_dag()\n")
    (dags / "peer.py").write_text(PEER_DAG)
    bag = DagBag(dag_folder=str(dags))
    assert not bag.import_errors, bag.import_errors
    runs: list[tuple[str, str]] = []

    def test(dag_id: str) -> None:
        run = bag.dags[dag_id].test()
        assert str(run.state) == "success", f"{dag_id}: {run.state}"
        runs.append((dag_id, run.run_id))

    times = interleave(repeat, warmup, lambda: lambda: test("ours"), lambda: lambda: test("peer"))
    durations: dict[str, list[float]] = {}
    with create_session() as session:
        for dag_id, run_id in runs[2 * warmup :]:
            for ti in session.scalars(select(TI).where(TI.dag_id == dag_id, TI.run_id == run_id)):
                durations.setdefault(f"{dag_id}.{ti.task_id}", []).append(ti.duration)
    return times, {k: statistics.median(v) for k, v in durations.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-dag-test", action="store_true", help="skip (b), the dag.test() measurement")
    parser.add_argument("--profile", action="store_true", help="profile our side even if (a) is ≤ 1.2×")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="mlpipe-bench-docker-"))
    env = prepare_home(home, str(home / "store"))  # before Airflow is imported
    os.environ.update(env, AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING", AIRFLOW__MLPIPE__STAT_CACHE=str(home / "stat.db"))
    import docker
    from airflow.sdk.bases.operator import ExecutorSafeguard

    ExecutorSafeguard.test_mode = True  # (a) calls execute() directly, not through the Task Runner
    client = docker.from_env()
    load = [os.getloadavg()[0]]
    try:
        sides = Sides(home)
        a = summary(*interleave(args.repeat, args.warmup, sides.ours, sides.peer))
        calls = {"ours": api_calls(sides.ours()), "DockerOperator": api_calls(sides.peer())}
        profile = profile_ours(sides, 5) if args.profile or a[0] / a[2] > 1.2 else None
        b = None
        if not args.no_dag_test:
            migrate_db(home, env)
            b_times, tasks = dag_test_times(home, args.repeat, args.warmup)
            b = summary(*b_times)
        load.append(os.getloadavg()[0])
    finally:
        subprocess.run(["chmod", "-R", "u+w", home], check=False)  # committed outputs are read-only
        shutil.rmtree(home, ignore_errors=True)

    ms = lambda t: f"{t * 1000:.0f} ms"  # noqa: E731
    rows = {"(a) run operator `execute()` alone": a} | ({"(b) whole step via `dag.test()`": b} if b else {})
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Docker Engine {client.version()['Version']} ({client.info()['Driver']}); 1-min load average "
        f"{load[0]:.1f} → {load[-1]:.1f}. {args.repeat} repetitions per side after {args.warmup} warm-up, "
        f"interleaved; container `{IMAGE}` running `true`.",
        "",
        "| measurement | ours median | ours p90 | DockerOperator median | DockerOperator p90 "
        "| ratio | paired | ours − DockerOperator |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {name} | {ms(mo)} | {ms(po)} | {ms(mp)} | {ms(pp)} | **{mo / mp:.2f}×** | {r:.2f}× | {ms(mo - mp)} |"
            for name, (mo, po, mp, pp, r) in rows.items()
        ],
    ]
    if b is not None:
        t = {k: ms(v) for k, v in tasks.items()}
        lines += ["", f"(b) task durations recorded by Airflow (medians): ours check {t['ours.noop.check']} + run "]
        lines[-1] += f"{t['ours.noop.run']}, DockerOperator {t['peer.run']}; the rest is `dag.test()`'s own loop."
    lines += ["", "Docker API requests per step in (a), each side creating its clients as a new task does:", ""]
    lines += [
        f"- {k} ({sum(v.values())}): " + ", ".join(f"`{c}` ×{n}" for c, n in sorted(v.items()))
        for k, v in calls.items()
    ]
    text = "\n".join(lines)
    print(text)
    if profile:
        print(f"\nWhere our run operator's time goes (cProfile, main thread, 5 executes):\n{profile}")
    print(f"\nContainers of {IMAGE} left: {len(client.containers.list(all=True, filters={'ancestor': IMAGE}))}")
    if args.out:
        marker = "<!-- bench_docker_overhead -->"
        doc = args.out.read_text() if args.out.exists() else "# Benchmarks\n"
        if marker not in doc:
            doc = doc.rstrip("\n") + f"\n\n## Docker step overhead\n\n{METHOD}\n\n{marker}\n{marker}\n"
        head, _, rest = doc.partition(marker)
        _, _, tail = rest.partition(marker)
        args.out.write_text(f"{head}{marker}\n{text}\n{marker}{tail}")


if __name__ == "__main__":
    main()
