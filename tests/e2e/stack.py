"""A real Apache Airflow 3 stack for end-to-end tests: api-server, scheduler, dag-processor
and triggerer, each a subprocess in its own session (process group), on 127.0.0.1 only.

The stack has its own AIRFLOW_HOME and metadata DB. Its configuration goes only into the
environment of its subprocesses: the test process's `os.environ` (which tests/conftest.py
points at another, in-process Airflow home) is never changed, and every `AIRFLOW*`
variable inherited from it is dropped before the stack's own are set.

Metadata DB: SQLite. Airflow 3.3 accepts SQLite with the LocalExecutor (it is what
`airflow standalone` runs); with parallelism 2 and one scheduler it is enough here.

Stopping: stop() SIGTERMs scheduler, dag-processor and triggerer first and the api-server
last (a task being stopped must still reach the execution API), then SIGKILLs whatever is
left, found through /proc: our process groups and sessions and all their descendants. It is
idempotent and registered with atexit; a small watchdog process (this file run with
`--watchdog`) does the same if the test process dies without running it, e.g. by SIGKILL.

    stack = AirflowStack(tmp, dags_folder, store)
    stack.start(dag_ids=["wine_classifier_python"])
    stack.unpause("wine_classifier_python")
    run_id = stack.trigger("wine_classifier_python", {"min_accuracy": 0.5})
    assert stack.wait_run("wine_classifier_python", run_id)["state"] == "success"
    stack.stop()
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

HOST = "127.0.0.1"
#: The components and their arguments. `--skip-serve-logs`: the log server binds every
#: interface (host "" is hard-coded in airflow.utils.serve_logs) and a fixed port (8793/8794);
#: with the LocalExecutor the api-server reads task logs from the shared local log folder.
COMPONENTS: dict[str, tuple[str, ...]] = {
    "api-server": ("api-server", "--host", HOST),
    "scheduler": ("scheduler", "--skip-serve-logs"),
    "dag-processor": ("dag-processor",),
    "triggerer": ("triggerer", "--skip-serve-logs"),
}
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


class StackError(RuntimeError):
    """The stack did not start, did not answer as expected, or left processes behind."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    starttime: int
    comm: str


def proc_table() -> dict[int, ProcInfo]:
    """Every process on the machine, read from /proc (zombies included, with state `Z`)."""
    table: dict[int, ProcInfo] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="utf-8", errors="replace") as f:
                raw = f.read()
        except OSError:  # gone meanwhile
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        table[int(entry.name)] = ProcInfo(
            pid=int(entry.name),
            state=fields[0],
            ppid=int(fields[1]),
            pgid=int(fields[2]),
            sid=int(fields[3]),
            starttime=int(fields[19]),
            comm=comm,
        )
    return table


def _alive(info: ProcInfo) -> bool:
    return info.state not in ("Z", "X")


class ProcessGroups:
    """The process groups of a stack's components and every process descended from them."""

    def __init__(self) -> None:
        self.groups: set[int] = set()  # process-group ids (= session ids = pids of the leaders)
        self.tracked: dict[int, tuple[int, int]] = {}  # pid -> (start time, owning group), all seen

    def members(
        self, table: Mapping[int, ProcInfo] | None = None, groups: Iterable[int] | None = None
    ) -> dict[int, ProcInfo]:
        """Live processes in our sessions or process groups, and all their descendants, since a
        task's own child may start a new session (the local step runner does). Each is owned by
        the component group it descends from; `groups` filters by owner."""
        table = proc_table() if table is None else table
        wanted = self.groups if groups is None else set(groups)
        owner: dict[int, int] = {}
        for pid, p in table.items():
            if not _alive(p):
                continue
            if p.sid in self.groups:
                owner[pid] = p.sid
            elif p.pgid in self.groups:
                owner[pid] = p.pgid
        # Seen earlier and since orphaned out of our tree: still the same process (start time)?
        for pid, (start, group) in self.tracked.items():
            seen = table.get(pid)
            if (
                pid not in owner
                and group in self.groups
                and seen is not None
                and seen.starttime == start
                and _alive(seen)
            ):
                owner[pid] = group
        children: dict[int, list[ProcInfo]] = {}
        for p in table.values():
            children.setdefault(p.ppid, []).append(p)
        todo = list(owner)
        while todo:
            parent = todo.pop()
            for child in children.get(parent, []):
                if child.pid not in owner and _alive(child):
                    owner[child.pid] = owner[parent]
                    todo.append(child.pid)
        for pid, group in owner.items():
            if self.tracked.get(pid, (None,))[0] != table[pid].starttime:
                self.tracked[pid] = (table[pid].starttime, group)
        return {pid: table[pid] for pid, group in owner.items() if group in wanted}

    @staticmethod
    def killpg(groups: Iterable[int], sig: int) -> None:
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)

    def terminate(
        self, phases: Iterable[set[int]], grace: float, reap: Callable[[], None] = lambda: None
    ) -> dict[int, ProcInfo]:
        """SIGTERM the groups phase by phase, each given `grace` seconds to end with all its
        descendants; then SIGKILL every group and process left. Returns what needed SIGKILL."""
        for phase in phases:
            if not phase:
                continue
            self.killpg(phase, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                reap()
                if not self.members(groups=phase):
                    break
                time.sleep(0.1)
        killed: dict[int, ProcInfo] = {}
        for _ in range(50):
            left = self.members()
            if not left:
                break
            killed.update(left)
            self.killpg(self.groups | {p.pgid for p in left.values()}, signal.SIGKILL)
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
            reap()
        return killed


def _watchdog(state_file: str, grace: float) -> None:
    """`python stack.py --watchdog STATE GRACE`, started by AirflowStack in its own session.

    Its stdin is a pipe from the test process, which never writes to it but b"stopped" after a
    clean stop(). End of file without that means the test process died (even by SIGKILL, when
    atexit cannot run): then it stops the stack as stop() would, reading the groups from STATE."""
    pg = ProcessGroups()
    last: set[int] = set()
    while True:
        ready, _, _ = select.select([sys.stdin.buffer], [], [], 1.0)
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(Path(state_file).read_text())
            pg.groups = set(state["groups"])
            last = set(state["last"])
        pg.members()  # keep track of descendants that may leave our sessions
        if ready:
            data = os.read(sys.stdin.fileno(), 64)
            if data.startswith(b"stopped"):
                return
            if not data:
                break
    print(f"test process gone: stopping groups {sorted(pg.groups)}", flush=True)
    killed = pg.terminate([pg.groups - last, last], grace)
    print(f"stopped; needed SIGKILL: {sorted((p.pid, p.comm) for p in killed.values())}", flush=True)


class AirflowStack:
    """A private Airflow stack (LocalExecutor, SimpleAuthManager, SQLite) on 127.0.0.1."""

    def __init__(
        self,
        root: Path,
        dags_folder: Path,
        store: Path,
        *,
        username: str = "admin",
        password: str = "admin",
        parallelism: int = 2,
        python: str = sys.executable,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.dags_folder = Path(dags_folder).resolve()
        self.store = Path(store).resolve()
        self.home = self.root / "airflow"
        self.logs = self.root / "logs"
        self.username = username
        self.password = password
        self.python = python
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.passwords_file = self.home / "simple_auth_manager_passwords.json"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.timings: dict[str, float] = {}
        self.groups = ProcessGroups()
        self.killed: dict[int, ProcInfo] = {}  # what stop() had to SIGKILL
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._token: str | None = None
        self._http: httpx.Client | None = None
        self._stopped = False
        self.env = self._environment(parallelism, extra_env or {})
        atexit.register(self.stop)

    # -- configuration -----------------------------------------------------------------

    def _environment(self, parallelism: int, extra: Mapping[str, str]) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
        from cryptography.fernet import Fernet  # an Airflow dependency

        own = {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.username}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            # SQLite, as `airflow standalone` uses; wait up to 60 s for a lock (Python's default
            # of 5 s makes the API answer "database is locked" under the scheduler's writes).
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}?timeout=60",
            "AIRFLOW__API__HOST": HOST,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": f"{self.base_url}/",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),  # >= 64 bytes for HS512
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__MLPIPE__STORE": str(self.store),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        return {**base, **own, **extra}

    def _write_home(self) -> None:
        for path in (self.home, self.logs, self.dags_folder, self.store):
            path.mkdir(parents=True, exist_ok=True)
        # SimpleAuthManager keeps plaintext passwords as a JSON object {user: password}; it
        # only generates one for a configured user missing from this file.
        self.passwords_file.write_text(json.dumps({self.username: self.password}) + "\n")
        os.chmod(self.passwords_file, 0o600)

    # -- processes ---------------------------------------------------------------------

    def _popen(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                [self.python, "-m", "airflow", *args],
                env=self.env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session and process group: stop() kills the group
            )
        self.groups.groups.add(proc.pid)
        self._save_groups()
        return proc

    def _save_groups(self) -> None:
        """The groups for the watchdog (written atomically)."""
        state = {
            "groups": sorted(self.groups.groups),
            "last": [p.pid for n, p in self.procs.items() if n == "api-server"],
        }
        tmp = self.root / ".stack-groups.json.tmp"
        tmp.write_text(json.dumps(state))
        tmp.replace(self.root / ".stack-groups.json")

    def _start_watchdog(self, grace: float = 20) -> None:
        with open(self.logs / "watchdog.log", "wb") as log:
            self._watchdog = subprocess.Popen(
                [
                    self.python,
                    str(Path(__file__).resolve()),
                    "--watchdog",
                    str(self.root / ".stack-groups.json"),
                    str(grace),
                ],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not hit by a Ctrl-C meant for pytest
            )

    def _release_watchdog(self) -> None:
        dog, self._watchdog = self._watchdog, None
        if dog is None:
            return
        with contextlib.suppress(OSError):
            assert dog.stdin is not None
            dog.stdin.write(b"stopped\n")
            dog.stdin.close()
        try:
            dog.wait(timeout=10)
        except subprocess.TimeoutExpired:
            dog.kill()
            dog.wait()

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`airflow ARGS` with the stack's configuration, in its own process group."""
        name = "cli-" + "-".join(a for a in args[:2] if not a.startswith("-"))
        proc = self._popen(name, *args)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            ProcessGroups.killpg({proc.pid}, signal.SIGKILL)
            proc.wait()
            raise StackError(f"`airflow {' '.join(args)}` timed out after {timeout}s\n{self.log_tail(name)}") from None
        finally:
            if not self.groups.members(groups={proc.pid}):
                self.groups.groups.discard(proc.pid)  # done, and nothing of it left: forget the group
                self._save_groups()
        text = (self.logs / f"{name}.log").read_text(errors="replace")
        return subprocess.CompletedProcess(proc.args, proc.returncode, text, "")

    def start(self, dag_ids: Iterable[str] = (), *, timeout: float = 240) -> AirflowStack:
        """Migrate the DB, start the four components, wait for health and for `dag_ids`."""
        if self.procs:
            raise StackError("stack already started; a stopped stack is not restarted: make a new AirflowStack")
        self._stopped = False
        t0 = time.monotonic()
        self._write_home()
        self._save_groups()
        self._start_watchdog()
        migrated = self.cli("db", "migrate", timeout=timeout)
        if migrated.returncode != 0:
            raise StackError(f"`airflow db migrate` failed ({migrated.returncode})\n{migrated.stdout[-4000:]}")
        self.timings["db_migrate"] = time.monotonic() - t0
        # Write-ahead logging (stored in the DB file): readers no longer block the writer.
        with closing(sqlite3.connect(self.home / "airflow.db")) as db:
            db.execute("PRAGMA journal_mode=WAL")
        for component, argv in COMPONENTS.items():
            self.procs[component] = self._popen(component, *argv)
        self._save_groups()
        try:
            self.wait_healthy(timeout=timeout - (time.monotonic() - t0))
            self.timings["healthy"] = time.monotonic() - t0
            for dag_id in dag_ids:
                self.wait_dag(dag_id, timeout=max(30.0, timeout - (time.monotonic() - t0)))
            self.timings["dags_parsed"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        return self

    def check_running(self) -> None:
        dead = {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}
        if dead:
            tails = "\n".join(self.log_tail(name) for name in dead)
            raise StackError(f"Airflow components exited: {dead}\n{tails}")

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return f"--- {path}: missing"
        text = path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- last {len(text)} lines of {path}:\n" + "\n".join(text)

    # -- stopping ----------------------------------------------------------------------

    def remaining(self) -> dict[int, ProcInfo]:
        """Processes of the stack still alive (empty once stopped)."""
        return self.groups.members()

    def _reap(self) -> None:
        for proc in self.procs.values():
            proc.poll()

    def stop(self, grace: float = 20) -> None:
        """Stop the stack; raise StackError if any of its processes survives.

        SIGTERM to the groups of scheduler, dag-processor and triggerer first, with the
        api-server still up: a task being stopped reports its end through the execution API,
        and without it the task supervisor retries for a long time. Then SIGTERM to the
        api-server, then SIGKILL to every group and process of the stack that is left.
        Idempotent; also registered with atexit, and a watchdog process does the same if the
        test process dies without it."""
        if self._stopped:
            return
        self._stopped = True
        t0 = time.monotonic()
        if self._http is not None:
            self._http.close()
            self._http = None
        api = {p.pid for name, p in self.procs.items() if name == "api-server"}
        self.killed = self.groups.terminate([self.groups.groups - api, api], grace, self._reap)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.timings["stop"] = time.monotonic() - t0
        left = self.groups.members()
        if not left:
            self._release_watchdog()
        if left:
            desc = ", ".join(f"{p.pid} ({p.comm}, pgid {p.pgid}, state {p.state})" for p in left.values())
            raise StackError(f"processes of the Airflow stack survived SIGKILL: {desc}")

    # -- REST API ----------------------------------------------------------------------

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            # trust_env=False: never route 127.0.0.1 through a proxy from the environment.
            self._http = httpx.Client(base_url=self.base_url, timeout=30, trust_env=False)
        return self._http

    def token(self) -> str:
        """A JWT for the configured user, obtained like any client: `POST /auth/token`."""
        resp = self.http.post("/auth/token", json={"username": self.username, "password": self.password})
        if resp.status_code != 201:
            raise StackError(f"POST /auth/token: {resp.status_code} {resp.text[:500]}")
        self._token = str(resp.json()["access_token"])
        return self._token

    def request(self, method: str, path: str, json: Any = None, params: Any = None) -> tuple[int, Any]:
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self._token or self.token()}"}
            resp = self.http.request(method, path, json=json, params=params, headers=headers)
            if resp.status_code == 401 and attempt == 1:  # expired: log in again once
                self._token = None
                continue
            break
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        return resp.status_code, body

    def get(self, path: str, params: Any = None) -> tuple[int, Any]:
        return self.request("GET", path, params=params)

    def post(self, path: str, json: Any = None) -> tuple[int, Any]:
        return self.request("POST", path, json=json)

    def patch(self, path: str, json: Any = None) -> tuple[int, Any]:
        return self.request("PATCH", path, json=json)

    def _expect(self, result: tuple[int, Any], *ok: int, what: str) -> Any:
        status, body = result
        if status not in ok:
            raise StackError(f"{what}: HTTP {status}: {body}")
        return body

    def health(self) -> dict[str, Any]:
        resp = self.http.get("/api/v2/monitor/health")  # no authentication needed
        resp.raise_for_status()
        return dict(resp.json())

    def wait_healthy(self, timeout: float = 120) -> dict[str, Any]:
        """Until the API answers and the DB, scheduler, dag-processor and triggerer are healthy."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            self.check_running()
            try:
                health = self.health()
            except (httpx.HTTPError, ValueError) as exc:
                last = repr(exc)
            else:
                last = health
                parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
                if all((health.get(p) or {}).get("status") == "healthy" for p in parts):
                    return health
            time.sleep(0.5)
        tails = "\n".join(self.log_tail(name) for name in self.procs)
        raise StackError(f"stack not healthy after {timeout:.0f}s; last health: {last}\n{tails}")

    def wait_dag(self, dag_id: str, timeout: float = 120) -> dict[str, Any]:
        """Until the dag-processor has parsed and serialized `dag_id`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_running()
            status, body = self.get(f"/api/v2/dags/{dag_id}")
            if status == 200:
                return dict(body)
            time.sleep(1)
        _, errors = self.get("/api/v2/importErrors")
        raise StackError(
            f"DAG `{dag_id}` not parsed after {timeout:.0f}s; import errors: {errors}\n{self.log_tail('dag-processor')}"
        )

    def unpause(self, dag_id: str) -> None:
        body = self._expect(self.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False}), 200, what=f"unpause {dag_id}")
        if body.get("is_paused") is not False:
            raise StackError(f"unpause {dag_id}: still paused: {body}")

    def pause(self, dag_id: str) -> None:
        self._expect(self.patch(f"/api/v2/dags/{dag_id}", {"is_paused": True}), 200, what=f"pause {dag_id}")

    def dag(self, dag_id: str) -> dict[str, Any]:
        return dict(self._expect(self.get(f"/api/v2/dags/{dag_id}"), 200, what=f"DAG {dag_id}"))

    def runs(self, dag_id: str, **filters: Any) -> list[dict[str, Any]]:
        """The DAG's runs, oldest first; filters as query parameters (e.g. `run_type="scheduled"`)."""
        params = {"order_by": "run_after", "limit": 1000, **filters}
        body = self._expect(self.get(f"/api/v2/dags/{dag_id}/dagRuns", params=params), 200, what=f"runs of {dag_id}")
        return list(body["dag_runs"])

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, logical_date: str | None = None) -> str:
        """A manual run through the REST API; `logical_date` (ISO 8601) may be None. Returns its run id."""
        payload = {"logical_date": logical_date, "conf": dict(conf or {})}
        body = self._expect(self.post(f"/api/v2/dags/{dag_id}/dagRuns", payload), 200, what=f"trigger {dag_id}")
        return str(body["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(
            self._expect(self.get(f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"), 200, what=f"run {run_id}")
        )

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 300) -> dict[str, Any]:
        """Poll until the run is `success` or `failed`; returns the DAG run."""
        deadline = time.monotonic() + timeout
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self.check_running()
            run = self.dag_run(dag_id, run_id)
            if run.get("state") in TERMINAL_RUN_STATES:
                return run
            time.sleep(1)
        raise StackError(
            f"run {dag_id}/{run_id} not finished after {timeout:.0f}s (state {run.get('state')}); "
            f"tasks: {self.task_instances(dag_id, run_id)}\n{self.log_tail('scheduler')}"
        )

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """{task_id: state} of a run (mapped instances as `task_id[i]`)."""
        body = self._expect(
            self.get(f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances", params={"limit": 1000}),
            200,
            what=f"task instances of {run_id}",
        )
        states: dict[str, str | None] = {}
        for ti in body["task_instances"]:
            key = ti["task_id"] if ti.get("map_index", -1) < 0 else f"{ti['task_id']}[{ti['map_index']}]"
            states[key] = ti["state"]
        return states

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """A task's log through the API (for failure messages)."""
        status, body = self.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/logs/{try_number}"
        )
        return json.dumps(body, indent=1)[-6000:] if status == 200 else f"HTTP {status}: {body}"


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--watchdog":
    _watchdog(sys.argv[2], float(sys.argv[3]))
