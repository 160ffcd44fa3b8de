"""A real Apache Airflow 3 stack for end-to-end tests: api-server, scheduler, dag-processor
and triggerer, each a subprocess in its own session (process group), on 127.0.0.1 only.

The stack has its own AIRFLOW_HOME and metadata DB. Its configuration goes only into the
environment of its subprocesses: the test process's `os.environ` (which tests/conftest.py
points at another, in-process Airflow home) is never changed, and every `AIRFLOW*`
variable inherited from it is dropped before the stack's own are set.

Metadata DB: SQLite. Airflow 3.3 accepts SQLite with the LocalExecutor (it is what
`airflow standalone` runs); with parallelism 2 and one scheduler it is enough here.

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
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        self._groups: set[int] = set()  # process-group ids (= pids of the leaders)
        self._tracked: dict[int, int] = {}  # pid -> starttime of every process seen in our sessions
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
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
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
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            proc = subprocess.Popen(
                [self.python, "-m", "airflow", *args],
                env=self.env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session and process group: stop() kills the group
            )
        finally:
            log.close()
        self._groups.add(proc.pid)
        return proc

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`airflow ARGS` with the stack's configuration, in its own process group."""
        name = "cli-" + "-".join(a for a in args[:2] if not a.startswith("-"))
        proc = self._popen(name, *args)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_groups({proc.pid}, signal.SIGKILL)
            proc.wait()
            raise StackError(f"`airflow {' '.join(args)}` timed out after {timeout}s\n{self.log_tail(name)}") from None
        finally:
            self._groups.discard(proc.pid)
        text = (self.logs / f"{name}.log").read_text(errors="replace")
        return subprocess.CompletedProcess(proc.args, proc.returncode, text, "")

    def start(self, dag_ids: Iterable[str] = (), *, timeout: float = 240) -> AirflowStack:
        """Migrate the DB, start the four components, wait for health and for `dag_ids`."""
        if self.procs:
            raise StackError("stack already started")
        self._stopped = False
        t0 = time.monotonic()
        self._write_home()
        migrated = self.cli("db", "migrate", timeout=timeout)
        if migrated.returncode != 0:
            raise StackError(f"`airflow db migrate` failed ({migrated.returncode})\n{migrated.stdout[-4000:]}")
        self.timings["db_migrate"] = time.monotonic() - t0
        for component, argv in COMPONENTS.items():
            self.procs[component] = self._popen(component, *argv)
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

    def _members(self, table: Mapping[int, ProcInfo]) -> dict[int, ProcInfo]:
        """Live processes in our groups or sessions, and all their descendants (a task's own
        child may start a new session, as the local step runner does)."""
        found = {pid: p for pid, p in table.items() if _alive(p) and (p.pgid in self._groups or p.sid in self._groups)}
        # Known earlier (e.g. a step process that left our session): still the same process?
        for pid, start in self._tracked.items():
            p = table.get(pid)
            if p is not None and p.starttime == start and _alive(p):
                found[pid] = p
        children: dict[int, list[ProcInfo]] = {}
        for p in table.values():
            children.setdefault(p.ppid, []).append(p)
        todo = list(found)
        while todo:
            for child in children.get(todo.pop(), []):
                if child.pid not in found and _alive(child):
                    found[child.pid] = child
                    todo.append(child.pid)
        for pid, p in found.items():
            self._tracked.setdefault(pid, p.starttime)
        return found

    def remaining(self) -> dict[int, ProcInfo]:
        """Processes of the stack still alive (empty once stopped)."""
        return self._members(proc_table())

    def _kill_groups(self, groups: Iterable[int], sig: int) -> None:
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)

    def stop(self, grace: float = 20) -> None:
        """SIGTERM every group, wait, SIGKILL what is left; raise if anything survives.

        Idempotent; also runs at interpreter exit."""
        if self._stopped:
            return
        self._stopped = True
        t0 = time.monotonic()
        if self._http is not None:
            self._http.close()
            self._http = None
        members = self._members(proc_table())
        self._kill_groups(self._groups | {p.pgid for p in members.values()}, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            for proc in self.procs.values():
                proc.poll()  # reap our direct children
            members = self._members(proc_table())
            if not members:
                break
            time.sleep(0.2)
        for _ in range(10):
            members = self._members(proc_table())
            if not members:
                break
            self._kill_groups(self._groups | {p.pgid for p in members.values()}, signal.SIGKILL)
            for pid, p in members.items():
                if p.pgid not in self._groups:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
            for proc in self.procs.values():
                proc.poll()
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.timings["stop"] = time.monotonic() - t0
        left = self._members(proc_table())
        self.procs = {}
        if left:
            desc = ", ".join(f"{p.pid} ({p.comm}, pgid {p.pgid})" for p in left.values())
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
                last = self.health()
            except (httpx.HTTPError, ValueError) as exc:
                last = repr(exc)
            else:
                parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
                if all((last.get(p) or {}).get("status") == "healthy" for p in parts):
                    return last
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

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, logical_date: str | None = None) -> str:
        """A manual run through the REST API; `logical_date` (ISO 8601) may be None. Returns its run id."""
        payload = {"logical_date": logical_date, "conf": dict(conf or {})}
        body = self._expect(self.post(f"/api/v2/dags/{dag_id}/dagRuns", payload), 200, what=f"trigger {dag_id}")
        return str(body["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self._expect(self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"), 200, what=f"run {run_id}"))

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
            self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000}),
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
        status, body = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}")
        return json.dumps(body, indent=1)[-6000:] if status == 200 else f"HTTP {status}: {body}"
