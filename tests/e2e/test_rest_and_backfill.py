"""REST-API triggering and backfills of `wine_classifier` (Docker target) on the real stack.

Independence: other tests share the session's stack and store, in any order. So every test
here uses its own `seed` (the key of `prepare`, hence of everything downstream, depends on
it) and, for backfills, its own dates; counts of containers and manifests are taken only
within windows this test controls, and containers are attributed by their labels
(`mlpipe.pipeline`, `airflow.run_id`) to this test's runs.

Facts checked in Airflow 3.3.2 (airflow/models/backfill.py, airflow/models/dagrun.py):
- `POST /api/v2/backfills` creates its runs at once (state `queued`, run id
  `backfill__<run_after>`), but the scheduler only starts queued runs of unpaused DAGs
  (`DagRun.get_queued_dag_runs_to_set_running` joins `DagModel.is_paused == false`): the
  DAG must be unpaused for a backfill to progress.
- `reprocess_behavior: completed` does not create new runs: it clears the existing ones
  (same run ids, `try_number` + 1) and, when `dag_run_conf` is given, replaces their conf.
- Only one backfill per DAG may be active; the scheduler marks one completed (`completed_at`)
  every 30 s once none of its runs is queued or running.
- A backfill run's `start_date` is its creation time, so run-level start/end dates say
  nothing about parallelism; task instances' do.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.stack import TERMINAL_RUN_STATES, AirflowStack

DAG_ID = "wine_classifier"
PIPELINE = "wine_classifier"  # the `mlpipe.pipeline` label of its containers
STEPS = ("prepare", "train", "evaluate", "register")
RUN_TASKS = tuple(f"{s}.run" for s in STEPS)
CHECK_TASKS = tuple(f"{s}.check" for s in STEPS)

# Distinct seeds per test: nobody else computes these keys, whatever ran before.
SEED_REST = (310_101, 310_102)
SEED_BACKFILL = 330_303
SEED_PARALLEL = 340_404
# Distinct dates per backfill test (and none near today's scheduled runs).
BACKFILL_DATES = (date(2026, 11, 9), date(2026, 11, 11))
PARALLEL_DATES = (date(2026, 11, 20), date(2026, 11, 22))

RUN_TIMEOUT = 300
BACKFILL_TIMEOUT = 900


def _log(msg: str) -> None:
    print(f"[e2e-rest] {msg}", flush=True)


def _utc(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def _midnight(day: date) -> str:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc).isoformat()


# -- Docker: containers per run, by label -----------------------------------------------


class Containers:
    """Containers of `PIPELINE` created on the engine since start(), from Docker events
    (filtered by whole seconds, hence the pause before a window opens) and attributed by
    their labels to (run id, step), so work of anyone else on the engine does not count."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.since = 0

    def start(self) -> None:
        time.sleep(1.05)
        self.since = int(time.time())

    def events(self, *kinds: str) -> list[dict[str, Any]]:
        return list(
            self.client.events(
                since=self.since,
                until=int(time.time()) + 1,
                decode=True,
                filters={"type": "container", "event": list(kinds), "label": [f"mlpipe.pipeline={PIPELINE}"]},
            )
        )

    def created(self, run_ids: Iterable[str]) -> Counter[tuple[str, str]]:
        """{(run id, step): containers created} for the given runs."""
        wanted = set(run_ids)
        counts: Counter[tuple[str, str]] = Counter()
        for event in self.events("create"):
            attrs = event.get("Actor", {}).get("Attributes", {})
            if attrs.get("airflow.run_id") in wanted:
                counts[(attrs["airflow.run_id"], attrs.get("mlpipe.step", "?"))] += 1
        return counts

    def lifetimes(self, run_ids: Iterable[str]) -> list[tuple[str, str, float, float]]:
        """(run id, step, start, die) in seconds since the epoch, per container of the runs."""
        wanted = set(run_ids)
        seen: dict[str, dict[str, Any]] = {}
        for event in self.events("start", "die"):
            attrs = event.get("Actor", {}).get("Attributes", {})
            if attrs.get("airflow.run_id") not in wanted:
                continue
            entry = seen.setdefault(
                event["Actor"]["ID"], {"run": attrs["airflow.run_id"], "step": attrs["mlpipe.step"]}
            )
            entry[str(event.get("status") or event.get("Action"))] = event["timeNano"] / 1e9
        return [(e["run"], e["step"], e["start"], e["die"]) for e in seen.values() if "start" in e and "die" in e]


# -- the artifact store -----------------------------------------------------------------


def manifests(store: Path) -> dict[str, dict[str, Any]]:
    """{key: manifest} of every committed result in the local store."""
    root = store / "manifests"
    if not root.is_dir():
        return {}
    return {
        p.stem: json.loads(p.read_text(encoding="utf-8"))
        for p in root.rglob("*.json")
        if not p.name.startswith(".")  # `.<name>.<uuid>.tmp` files are being written
    }


# -- REST helpers -----------------------------------------------------------------------


def task_instances(stack: AirflowStack, run_id: str) -> dict[str, dict[str, Any]]:
    """{task_id: task instance as the API returns it} of a run of DAG_ID."""
    status, body = stack.get(
        f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances", params={"limit": 1000}
    )
    assert status == 200, body
    return {ti["task_id"]: ti for ti in body["task_instances"]}


def log_text(stack: AirflowStack, run_id: str, task_id: str, try_number: int) -> str:
    """The messages of a task's log (one try), joined by newlines."""
    status, body = stack.get(
        f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/logs/{try_number}",
        params={"full_content": True},
    )
    assert status == 200, f"log of {run_id}/{task_id}/{try_number}: HTTP {status}: {body}"
    lines = []
    for item in body.get("content") or []:
        lines.append(str(item.get("event", "")) if isinstance(item, dict) else str(item))
    return "\n".join(lines)


def cache_line(stack: AirflowStack, run_id: str, step: str) -> str:
    """The `mlpipe cache HIT/MISS` line of a step's check, in its latest try."""
    ti = task_instances(stack, run_id)[f"{step}.check"]
    text = log_text(stack, run_id, f"{step}.check", int(ti["try_number"]))
    lines = [line for line in text.splitlines() if "mlpipe cache " in line and "WAIT" not in line]
    assert len(lines) == 1, f"{run_id}/{step}.check try {ti['try_number']}: expected one cache line\n{text[-3000:]}"
    return lines[0]


def failure_report(stack: AirflowStack, run_id: str) -> str:
    tis = task_instances(stack, run_id)
    parts = [f"{run_id}: { ({t: ti['state'] for t, ti in tis.items()}) }"]
    for task_id, ti in tis.items():
        if ti["state"] not in ("success", "skipped"):
            parts.append(stack.task_log(DAG_ID, run_id, task_id, max(1, int(ti["try_number"] or 1))))
    return "\n".join(parts)


def run_states(stack: AirflowStack, run_id: str) -> dict[str, str | None]:
    return {t: ti["state"] for t, ti in task_instances(stack, run_id).items()}


def finish(stack: AirflowStack, run_id: str, started: float) -> dict[str, Any]:
    run = stack.wait_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)
    _log(f"{run_id}: {run['state']} after {time.monotonic() - started:.1f}s {run_states(stack, run_id)}")
    assert run["state"] == "success", failure_report(stack, run_id)
    return run


@contextlib.contextmanager
def unpaused(stack: AirflowStack) -> Iterator[None]:
    """Unpause DAG_ID for the block and pause it again after. Unpausing a periodic DAG with
    catchup=False makes the scheduler create its latest scheduled run at once when one is
    due: wait for it first, so it neither competes for the two task slots nor runs during
    the measurements (its keys use the default seed: it never touches ours)."""
    next_run_after = _utc(stack.dag(DAG_ID)["next_dagrun_run_after"])
    due = next_run_after is not None and next_run_after <= datetime.now(timezone.utc)
    before = {r["dag_run_id"] for r in stack.runs(DAG_ID, run_type="scheduled")}
    stack.unpause(DAG_ID)
    try:
        if due:
            started = time.monotonic()
            while not (new := [r for r in stack.runs(DAG_ID, run_type="scheduled") if r["dag_run_id"] not in before]):
                assert time.monotonic() - started < 60, "unpaused, but the scheduler created no scheduled run"
                time.sleep(0.5)
            run = stack.wait_run(DAG_ID, new[-1]["dag_run_id"], timeout=RUN_TIMEOUT)
            _log(
                f"scheduled run {run['dag_run_id']} from unpausing: {run['state']} in {time.monotonic() - started:.1f}s"
            )
        yield
    finally:
        stack.pause(DAG_ID)


# -- backfill helpers -------------------------------------------------------------------


def backfill_body(first: date, last: date, **options: Any) -> dict[str, Any]:
    return {"dag_id": DAG_ID, "from_date": _midnight(first), "to_date": _midnight(last), **options}


def backfill_dry_run(stack: AirflowStack, body: Mapping[str, Any]) -> list[str]:
    status, resp = stack.post("/api/v2/backfills/dry_run", dict(body))
    assert status == 200, f"dry run: HTTP {status}: {resp}"
    return sorted(b["logical_date"] for b in resp["backfills"])


def active_backfills(stack: AirflowStack) -> list[dict[str, Any]]:
    status, body = stack.get("/api/v2/backfills", params={"dag_id": DAG_ID, "limit": 100})
    assert status == 200, body
    return [b for b in body["backfills"] if b["completed_at"] is None]


def backfill_runs(stack: AirflowStack, first: date, last: date) -> list[dict[str, Any]]:
    runs = stack.runs(DAG_ID, logical_date_gte=_midnight(first), logical_date_lte=_midnight(last))
    return [r for r in runs if r["run_type"] == "backfill"]


def create_backfill(stack: AirflowStack, body: Mapping[str, Any], timeout: float = 200) -> dict[str, Any]:
    """`POST /api/v2/backfills`, again while SQLite is busy.

    On SQLite, Airflow answers 503 ("Database is locked. Backfill creation is not supported
    on SQLite under concurrent access") when its transaction meets `database is locked`
    (another writer, e.g. the scheduler, held the lock past the busy timeout); seen here for
    about one creation in four of a reprocessing backfill. Airflow then deletes the half-made
    backfill on a best-effort basis; if that fails too, the scheduler marks the orphan (no
    runs) completed once it is two minutes old, and until then a new backfill gets 409."""
    deadline = time.monotonic() + timeout
    locked = 0
    while True:
        status, resp = stack.post("/api/v2/backfills", dict(body))
        if status == 200:
            if locked:
                _log(f"backfill created after {locked} `database is locked` answers")
            return dict(resp)
        retry = status == 503 or (status == 409 and locked > 0)
        assert retry and time.monotonic() < deadline, f"create backfill {body}: HTTP {status}: {resp}"
        locked += status == 503
        _log(f"create backfill: HTTP {status}: {resp}; trying again")
        time.sleep(5)


def run_backfill(stack: AirflowStack, first: date, last: date, **options: Any) -> tuple[list[dict[str, Any]], float]:
    """Create a backfill through the REST API and wait until all its runs end and the
    scheduler marks it completed. Returns its runs (by logical date) and the seconds until
    the last run ended."""
    body = backfill_body(first, last, **options)
    started = time.monotonic()
    backfill = create_backfill(stack, body)
    _log(f"backfill {backfill['id']} created: {json.dumps(body)}")
    try:
        deadline = started + BACKFILL_TIMEOUT
        while True:
            stack.check_running()
            runs = backfill_runs(stack, first, last)
            if runs and all(r["state"] in TERMINAL_RUN_STATES for r in runs):
                break
            assert time.monotonic() < deadline, (
                f"backfill runs not done: {[(r['dag_run_id'], r['state']) for r in runs]}"
            )
            time.sleep(1)
        runs_done = time.monotonic() - started
        while True:  # needed before the next backfill of this DAG may be created
            status, current = stack.get(f"/api/v2/backfills/{backfill['id']}")
            assert status == 200, current
            if current["completed_at"] is not None:
                break
            assert time.monotonic() < deadline, f"backfill not marked completed: {current}"
            time.sleep(1)
    except BaseException:
        with contextlib.suppress(Exception):
            stack.request("PUT", f"/api/v2/backfills/{backfill['id']}/cancel")  # leave no active backfill
        raise
    _log(
        f"backfill {backfill['id']}: runs done in {runs_done:.1f}s, marked completed after "
        f"{time.monotonic() - started:.1f}s: {[(r['dag_run_id'], r['state']) for r in runs]}"
    )
    for run in runs:
        assert run["state"] == "success", failure_report(stack, run["dag_run_id"])
    return runs, runs_done


# -- 1. REST trigger with conf -----------------------------------------------------------


def test_rest_trigger_with_conf_reaches_steps_and_cache_key(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    first_seed, second_seed = SEED_REST
    with unpaused(stack):
        results = []
        for seed in (first_seed, second_seed):
            started = time.monotonic()
            run_id = stack.trigger(DAG_ID, {"seed": seed}, logical_date=None)
            run = finish(stack, run_id, started)
            results.append((seed, run))
            assert run["logical_date"] is None
            assert run["run_type"] == "manual"
            assert run["conf"] == {"seed": seed}
            # A new seed: nothing of this run can be cached, every step computes.
            assert run_states(stack, run_id) == {
                **{t: "success" for t in CHECK_TASKS},
                **{t: "success" for t in RUN_TASKS},
            }
            line = cache_line(stack, run_id, "prepare")
            _log(f"{run_id}: {line}")
            assert "mlpipe cache MISS for step `prepare`" in line

    # The second run's check explains its miss against the first run's result of `prepare`.
    second = results[1][1]
    line = cache_line(stack, second["dag_run_id"], "prepare")
    assert f"param `seed` ({first_seed} → {second_seed})" in line, line

    # The store records the value in the key's components and in the rendered command;
    # with a null logical date the run's date is its run_after date.
    found = manifests(stack.store)
    for seed, run in results:
        prepared = [
            m for m in found.values() if m["step"] == "prepare" and m["producer"]["run_id"] == run["dag_run_id"]
        ]
        assert len(prepared) == 1, [m["producer"] for m in found.values()]
        components = prepared[0]["components"]
        assert components["params"]["seed"] == seed
        argv = components["argv"]
        assert argv[argv.index("--seed") + 1] == str(seed)
        assert argv[argv.index("--date") + 1] == run["run_after"][:10]
        produced = {m["step"] for m in found.values() if m["producer"]["run_id"] == run["dag_run_id"]}
        assert produced == set(STEPS)


# -- 2. invalid params rejected ----------------------------------------------------------

INVALID_CONFS = [
    pytest.param({"n_estimators": "many"}, "n_estimators", id="wrong-type"),
    pytest.param({"test_size": 0.9}, "test_size", id="above-maximum"),
    pytest.param({"n_estimators": 0}, "n_estimators", id="below-minimum"),
    pytest.param({"model_name": 5}, "model_name", id="number-for-string"),
    pytest.param({"force_rerun": "yes"}, "force_rerun", id="string-for-boolean"),
]


@pytest.mark.parametrize(("conf", "param"), INVALID_CONFS)
def test_rest_rejects_invalid_params_without_creating_a_run(
    airflow_stack: AirflowStack, conf: dict[str, Any], param: str
) -> None:
    stack = airflow_stack
    before = {r["dag_run_id"] for r in stack.runs(DAG_ID)}

    status, body = stack.post(f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
    _log(f"trigger with {conf}: HTTP {status}: {body}")
    assert status == 400, body
    assert f"param {param}" in str(body.get("detail")), body  # the message names the param

    # A backfill with the same conf is refused too (FastAPI validation error: 422), and
    # leaves neither a backfill nor runs behind.
    backfills_before = stack.get("/api/v2/backfills", params={"dag_id": DAG_ID})[1]["total_entries"]
    status, body = stack.post("/api/v2/backfills", backfill_body(*BACKFILL_DATES, dag_run_conf=conf))
    _log(f"backfill with {conf}: HTTP {status}: {body}")
    assert status == 422, body
    assert f"param {param}" in str(body.get("detail")), body
    assert stack.get("/api/v2/backfills", params={"dag_id": DAG_ID})[1]["total_entries"] == backfills_before

    after = {r["dag_run_id"] for r in stack.runs(DAG_ID)}
    assert after == before, f"new runs: {after - before}"


# -- 3. backfill: miss, all hits, then only the changed step -----------------------------


@pytest.mark.timeout(2400)
def test_backfill_computes_each_date_once_then_hits_then_reruns_only_changed_step(
    airflow_stack: AirflowStack, docker_client: Any
) -> None:
    stack = airflow_stack
    first, last = BACKFILL_DATES
    conf = {"seed": SEED_BACKFILL}
    assert not active_backfills(stack), "another backfill of the DAG is still active"
    containers = Containers(docker_client)
    timings: dict[str, float] = {}

    # Fresh dates unless someone ran them before: then reprocess (a clear) instead.
    expected = backfill_dry_run(stack, backfill_body(first, last, dag_run_conf=conf))
    all_dates = backfill_dry_run(stack, backfill_body(first, last, dag_run_conf=conf, reprocess_behavior="completed"))
    assert len(all_dates) == 3, all_dates
    reprocess = "none" if expected == all_dates else "completed"
    if reprocess != "none":
        _log(f"runs exist already for {sorted(set(all_dates) - set(expected))}: first backfill reprocesses them")

    with unpaused(stack):
        # 1) every step computed once per date: 4 steps x 3 dates = 12 containers.
        containers.start()
        keys_before = set(manifests(stack.store))
        runs, timings["first"] = run_backfill(
            stack, first, last, dag_run_conf=conf, reprocess_behavior=reprocess, max_active_runs=3
        )
        run_ids = [r["dag_run_id"] for r in runs]
        assert sorted(r["logical_date"] for r in runs) == all_dates
        if reprocess == "none":
            assert all(r.startswith("backfill__") for r in run_ids), run_ids
        for run_id in run_ids:
            assert run_states(stack, run_id) == {
                **{t: "success" for t in CHECK_TASKS},
                **{t: "success" for t in RUN_TASKS},
            }, run_id
        created = containers.created(run_ids)
        _log(f"first backfill: {sum(created.values())} containers {dict(created)}")
        assert created == Counter({(r, s): 1 for r in run_ids for s in STEPS})
        assert sum(created.values()) == 12
        new = {k: m for k, m in manifests(stack.store).items() if k not in keys_before}
        assert sorted((m["producer"]["run_id"], m["step"]) for m in new.values()) == sorted(
            (r, s) for r in run_ids for s in STEPS
        )
        # Each run's logical date is its `run_date`, in `prepare`'s command and key.
        prepared = [m["components"]["argv"] for m in new.values() if m["step"] == "prepare"]
        assert sorted(argv[argv.index("--date") + 1] for argv in prepared) == sorted(d[:10] for d in all_dates)

        # 2) the same backfill again, reprocessing completed runs: all hits, no container.
        containers.start()
        keys_before = set(manifests(stack.store))
        again, timings["hits"] = run_backfill(
            stack, first, last, dag_run_conf=conf, reprocess_behavior="completed", max_active_runs=3
        )
        assert sorted(r["dag_run_id"] for r in again) == sorted(run_ids)  # cleared, not new runs
        for run_id in run_ids:
            tis = task_instances(stack, run_id)
            assert {t: ti["state"] for t, ti in tis.items()} == {
                **{t: "success" for t in CHECK_TASKS},
                **{t: "skipped" for t in RUN_TASKS},
            }, run_id
            assert all(int(tis[t]["try_number"]) >= 2 for t in CHECK_TASKS), tis  # really ran again
            assert "mlpipe cache HIT for step `register`" in cache_line(stack, run_id, "register")
        created = containers.created(run_ids)
        _log(f"second backfill (all hits): {sum(created.values())} containers {dict(created)}")
        assert sum(created.values()) == 0
        assert set(manifests(stack.store)) == keys_before

        # 3) a changed param through dag_run_conf: only `register` uses it.
        changed = {**conf, "min_accuracy": 0.55}
        containers.start()
        keys_before = set(manifests(stack.store))
        third, timings["changed_param"] = run_backfill(
            stack, first, last, dag_run_conf=changed, reprocess_behavior="completed", max_active_runs=3
        )
        assert sorted(r["dag_run_id"] for r in third) == sorted(run_ids)
        recomputed = [m for k, m in manifests(stack.store).items() if k not in keys_before]
        assert sorted(m["step"] for m in recomputed) == ["register"] * 3
        assert all(m["components"]["params"]["min_accuracy"] == 0.55 for m in recomputed)
        # Each run computed its own register result; Airflow may execute a cleared run's task
        # once more after that, and then the second execution is (rightly) a hit on it.
        assert sorted(m["producer"]["run_id"] for m in recomputed) == sorted(run_ids)
        for run in third:
            assert run["conf"] == changed
            states = run_states(stack, run["dag_run_id"])
            assert states == {
                **{t: "success" for t in CHECK_TASKS},
                **{f"{s}.run": "skipped" for s in ("prepare", "train", "evaluate")},
                "register.run": states["register.run"],
            }, run["dag_run_id"]
            line = cache_line(stack, run["dag_run_id"], "register")
            if states["register.run"] == "success":
                assert "mlpipe cache MISS for step `register`" in line, line
            else:
                assert states["register.run"] == "skipped" and run["dag_run_id"] in line, line
        created = containers.created(run_ids)
        _log(f"third backfill (min_accuracy 0.55): {sum(created.values())} containers {dict(created)}")
        assert created == Counter({(r, "register"): 1 for r in run_ids})
    _log(f"backfill timings (s): { {k: round(v, 1) for k, v in timings.items()} }")


# -- 4. several active runs at once on the local store -----------------------------------


def _max_overlap(intervals: Iterable[tuple[str, float, float]]) -> tuple[int, set[str]]:
    """Most intervals open at one instant, and the runs they belong to then."""
    points = [(t, kind, run) for run, s, e in intervals for t, kind in ((s, 1), (e, -1))]
    best_runs: set[str]
    best, best_runs = 0, set()
    open_runs: Counter[str] = Counter()
    for _, kind, run in sorted(points, key=lambda p: (p[0], p[1])):  # ends before starts at a tie
        open_runs[run] += kind
        now = sum(open_runs.values())
        if now > best:
            best, best_runs = now, {r for r, n in open_runs.items() if n > 0}
    return best, best_runs


@pytest.mark.timeout(1800)
def test_backfill_runs_overlap_on_the_local_store(airflow_stack: AirflowStack, docker_client: Any) -> None:
    stack = airflow_stack
    first, last = PARALLEL_DATES
    conf = {"seed": SEED_PARALLEL}
    assert not active_backfills(stack), "another backfill of the DAG is still active"
    parallelism = int(stack.env["AIRFLOW__CORE__PARALLELISM"])
    containers = Containers(docker_client)
    reprocess = "none"
    expected = backfill_dry_run(stack, backfill_body(first, last, dag_run_conf=conf))
    if len(expected) != 3:
        reprocess = "completed"
    with unpaused(stack):
        containers.start()
        window_opened = time.time()
        keys_before = set(manifests(stack.store))
        runs, elapsed = run_backfill(
            stack, first, last, dag_run_conf=conf, reprocess_behavior=reprocess, max_active_runs=3
        )
    run_ids = [r["dag_run_id"] for r in runs]
    assert len(run_ids) == 3

    # Task instances of different runs ran at the same time (the stack runs `parallelism`
    # tasks at once; backfill max_active_runs 3 lets all three runs be active). The runs'
    # own start dates are their creation time, so the tasks' times are what count.
    intervals: list[tuple[str, str, float, float]] = []
    for run_id in run_ids:
        tis = task_instances(stack, run_id)
        assert {t: ti["state"] for t, ti in tis.items()} == {t: "success" for t in CHECK_TASKS + RUN_TASKS}
        for task_id, ti in tis.items():
            start, end = _utc(ti["start_date"]), _utc(ti["end_date"])
            assert start is not None and end is not None, ti
            intervals.append((run_id, task_id, start.timestamp(), end.timestamp()))
    spans = {
        run_id: (min(i[2] for i in intervals if i[0] == run_id), max(i[3] for i in intervals if i[0] == run_id))
        for run_id in run_ids
    }
    t0 = min(s for s, _ in spans.values())
    shown = ", ".join(f"{r}: {s - t0:.1f}-{e - t0:.1f}" for r, (s, e) in spans.items())
    _log(f"run spans (s after the first task started): {shown}; backfill took {elapsed:.1f}s")
    most, together = _max_overlap((r, s, e) for r, _, s, e in intervals)
    _log(f"at most {most} tasks at once (parallelism {parallelism}), of runs {sorted(together)}")
    most_run, together_run = _max_overlap((r, s, e) for r, t, s, e in intervals if t.endswith(".run"))
    _log(f"at most {most_run} `.run` tasks at once, of runs {sorted(together_run)}")
    assert 2 <= most <= parallelism
    assert len(together) >= 2, "tasks of different backfill runs never ran at the same time"
    ordered = sorted(spans.values())
    assert any(a_end > b_start for (_, a_end), (b_start, _) in itertools.pairwise(ordered)), spans

    # One container per step and date. (How many lived at once is reported, not asserted:
    # a container lives about a second, a task's own start-up takes longer.)
    created = containers.created(run_ids)
    assert created == Counter({(r, s): 1 for r in run_ids for s in STEPS})
    lives = containers.lifetimes(run_ids)
    most_c, runs_c = _max_overlap((run, start, die) for run, _, start, die in lives)
    _log(f"containers: {len(lives)}, at most {most_c} alive at once, of runs {sorted(runs_c)}")

    # The local store under concurrent runs: every result committed exactly once, no lease
    # or staging directory left behind.
    new = {k: m for k, m in manifests(stack.store).items() if k not in keys_before}
    assert sorted((m["producer"]["run_id"], m["step"]) for m in new.values()) == sorted(
        (r, s) for r in run_ids for s in STEPS
    )
    leases = [p.stem for p in (stack.store / "leases").glob("*.json")]
    assert set(leases).isdisjoint(new), leases
    staging = [p for p in (stack.store / "staging").glob("*") if p.stat().st_mtime >= window_opened]
    assert staging == [], staging


def test_backfill_dates_are_past_and_distinct() -> None:
    """Dates used by the backfill tests lie in the past of the stack's clock (a backfill
    refuses future dates) and are distinct between the tests."""
    today = datetime.now(timezone.utc).date()
    assert BACKFILL_DATES[1] + timedelta(days=1) < today
    assert PARALLEL_DATES[1] + timedelta(days=1) < today
    assert BACKFILL_DATES[1] < PARALLEL_DATES[0]
