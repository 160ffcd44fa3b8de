"""The Airflow UI, driven like a person would, in Debian's Chromium through Playwright.

Against the session's real stack: log in through the SimpleAuthManager login page, open
the trigger form of `wine_classifier_python`, check that it shows the pipeline's params
with their descriptions and types, change one hyper-parameter and submit. Then only the
steps that use it run again (the others are cache hits), which the graph view shows as
task groups named after the steps; the check task's log says HIT or MISS; each step's
tasks carry a "Manifest" extra link to the stored result.

Independent of the other tests on the same stack: every run here uses a seed of its own
(`SEED`), so its cache keys are its own, and the DAG is left paused.

Screenshots go to var/screenshots/ (docs/img/ holds copies of two of them).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests.conftest import ROOT
from tests.e2e.stack import AirflowStack, proc_table
from tests.integration.conftest import unavailable

DAG_ID = "wine_classifier_python"
STEPS = ("prepare", "train", "evaluate", "register")
#: A seed no other test uses: `prepare` uses it, so every step's key in this test is its own.
SEED = 3302
#: The warm run's params: the DAG's defaults, with the test's own seed.
BASE_CONF = {"seed": SEED}
#: The one hyper-parameter the trigger form changes (default 4). `train` uses it; `evaluate`
#: and `register` take train's new model; `prepare` does not use it and stays a cache hit.
CHANGED = ("max_depth", 6)
RERUN = ("train", "evaluate", "register")
#: The form's fields as the DAG declares them: (name, kind, default, description, bounds).
PARAMS = (
    ("test_size", "number", 0.25, "Fraction of the day's snapshot held out for evaluation.", (0.1, 0.5)),
    ("seed", "number", 7, "Seed of the train/test split.", None),
    ("n_estimators", "number", 50, "Number of trees in the forest.", (1, 1000)),
    ("max_depth", "number", 4, "Maximum depth of each tree.", (1, 32)),
    ("min_accuracy", "number", 0.8, "Register the model only when its test accuracy reaches this.", (0, 1)),
    ("model_name", "text", "wine-classifier", "Name under which the model is registered.", None),
)

CHROMIUM = "/usr/bin/chromium"
#: DESIGN.md's flags, plus a direct connection: every request goes to 127.0.0.1.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
    "--no-proxy-server",
)
SCREENSHOTS = ROOT / "var" / "screenshots"
#: The manifest URL of the "Manifest" extra link (airflow_mlpipe.links.MANIFEST_ROUTE).
MANIFEST_HREF = re.compile(rf"/mlpipe/dags/{DAG_ID}/manifests/([0-9a-f]{{64}})$")  # no named group: JS runs it too


# -- the browser ----------------------------------------------------------------------------


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _browser_processes(profile: Path) -> dict[int, int]:
    """{pid: start time} of the live processes of our Chromium and Playwright's driver: the
    ones naming our profile folder (Chromium's, and its crash handler's database under our
    XDG_CONFIG_HOME), our Playwright driver, and every descendant of these."""
    table = proc_table()
    me = os.getpid()
    roots = {
        pid
        for pid, p in table.items()
        if p.state not in ("Z", "X")
        and (str(profile) in _cmdline(pid) or (p.ppid == me and "playwright" in _cmdline(pid)))
    }
    found = set(roots)
    todo = list(roots)
    while todo:
        parent = todo.pop()
        for pid, p in table.items():
            if p.ppid == parent and pid not in found and p.state not in ("Z", "X"):
                found.add(pid)
                todo.append(pid)
    return {pid: table[pid].starttime for pid in found}


def _still_alive(seen: dict[int, int]) -> dict[int, str]:
    table = proc_table()
    return {
        pid: table[pid].comm
        for pid, start in seen.items()
        if pid in table and table[pid].starttime == start and table[pid].state not in ("Z", "X")
    }


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's Chromium, headless, in a fresh profile; a Playwright BrowserContext. Always
    closed, and not one of its processes may outlive the module: what is left 15 s after
    closing is killed and the teardown fails."""
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"Debian's chromium is missing ({CHROMIUM}); run scripts/apt-install.sh chromium=chromium")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError as exc:
        unavailable(f"playwright is not installed ({exc}); install the `dev` extra")
    profile = tmp_path_factory.mktemp("chromium")
    # Chromium's own files (crash reports, dconf) go under the profile folder, not into $HOME.
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(profile / "xdg-config"),
        "XDG_CACHE_HOME": str(profile / "xdg-cache"),
        "XDG_DATA_HOME": str(profile / "xdg-data"),
    }
    blocked: list[str] = []

    def loopback_only(route: Any) -> None:
        host = urlsplit(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    seen: dict[int, int] = {}
    playwright = sync_playwright().start()
    try:
        context = playwright.chromium.launch_persistent_context(
            str(profile / "user-data"),  # passed as --user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=list(CHROMIUM_FLAGS),
            env=env,
            viewport={"width": 1440, "height": 900},
            timezone_id="UTC",
            locale="en-US",
        )
        try:
            seen = _browser_processes(profile)
            context.set_default_timeout(30_000)
            expect.set_options(timeout=30_000)
            context.route("**/*", loopback_only)
            yield context
            seen.update(_browser_processes(profile))
        finally:
            context.close()
    finally:
        playwright.stop()
        deadline = time.monotonic() + 15
        while True:
            seen.update(_browser_processes(profile))  # also any that still names our profile
            left = _still_alive(seen)
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        print(f"\n[e2e-ui] browser closed; {len(seen)} browser processes seen, none left: {not left}")
        if blocked:
            print(f"[e2e-ui] blocked requests to other hosts than 127.0.0.1: {blocked}")
    assert not left, f"Chromium/Playwright processes outlived the browser (killed now): {left}"


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        page.close()
    assert errors == [], f"uncaught errors in the UI's JavaScript: {errors}"


def login(page: Any, stack: AirflowStack) -> None:
    """Through the UI: the app sends an anonymous visitor to SimpleAuthManager's login page."""
    from playwright.sync_api import expect

    page.goto(f"{stack.base_url}/")
    page.wait_for_url(re.compile(r"/auth/login\?next="))
    expect(page.get_by_text("Sign into Airflow")).to_be_visible()
    page.get_by_label("Username").fill(stack.username)
    page.get_by_label("Password").fill(stack.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)
    expect(page.get_by_role("button", name="User")).to_be_visible()  # the nav bar of a signed-in user


# -- runs through the REST API --------------------------------------------------------------


def _date(run: dict[str, Any]) -> str:
    """The run's date, as the pipeline's keys see it: logical date, else run_after."""
    return str(run["logical_date"] or run["run_after"])[:10]


def _finish(stack: AirflowStack, run_id: str) -> tuple[dict[str, Any], dict[str, str | None]]:
    run = stack.wait_run(DAG_ID, run_id, timeout=300)
    states = stack.task_instances(DAG_ID, run_id)
    assert run["state"] == "success", "\n".join(
        [str(states)] + [stack.task_log(DAG_ID, run_id, t) for t, s in states.items() if s != "success"]
    )
    return run, states


def _unpause(stack: AirflowStack) -> None:
    """Unpausing makes the scheduler create the latest scheduled run when one is due
    (catchup=False). It runs the defaults (another seed: other keys than ours). Let it finish,
    so that it is neither left half-done when the DAG is paused again nor competing for the
    two slots; then empty the store, as test_stack_smoke does after the same run: whichever
    test unpauses first, the defaults' keys are not left warm by a run nobody asked for."""
    dag = stack.dag(DAG_ID)
    after = dag["next_dagrun_run_after"]
    due = dag["is_paused"] and after is not None and datetime.fromisoformat(after) <= datetime.now(timezone.utc)
    stack.unpause(DAG_ID)
    if due:
        deadline = time.monotonic() + 60
        while not (scheduled := stack.runs(DAG_ID, run_type="scheduled", run_after_gte=after)):
            assert time.monotonic() < deadline, "unpaused, but the scheduler created no scheduled run"
            time.sleep(0.5)
        _finish(stack, scheduled[-1]["dag_run_id"])
        for entry in stack.store.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()


# -- the trigger form -----------------------------------------------------------------------


def _check_form(dialog: Any) -> None:
    """One field per param, with its description, its type and its default; plus force_rerun."""
    from playwright.sync_api import expect

    expect(dialog.get_by_text("Run Parameters")).to_be_visible()
    for name, kind, default, description, bounds in PARAMS:
        if kind == "number":
            # Chakra's NumberInput: a text box with the spinbutton role and the spec's bounds.
            field = dialog.get_by_role("spinbutton", name=name, exact=True)
            expect(field).to_have_attribute("aria-roledescription", "numberfield")
            if bounds is not None:
                expect(field).to_have_attribute("aria-valuemin", str(bounds[0]))
                expect(field).to_have_attribute("aria-valuemax", str(bounds[1]))
        else:
            # Airflow 3.3.2's string field has no accessible name: its label's `for` names
            # another id than the input's (`element_<param>`).
            field = dialog.locator(f"input[name='element_{name}']")
            assert field.evaluate("e => e.type") == "text"
        expect(field).to_have_value(str(default))
        expect(field).to_have_accessible_description(description)
        expect(dialog.get_by_text(description, exact=True)).to_be_visible()
    force = dialog.get_by_role("checkbox", name="Force re-run")  # a switch; its label is the param's title
    expect(force).not_to_be_checked()
    expect(force).to_have_accessible_description("Recompute every step of this run, ignoring cached results.")


def trigger_in_ui(page: Any, stack: AirflowStack, conf: dict[str, Any]) -> str:
    """Open the trigger form from the DAG page, set `conf`'s fields, submit; the new run's id.
    Screenshot: var/screenshots/trigger-form.png (the filled form)."""
    from playwright.sync_api import expect

    page.goto(f"{stack.base_url}/dags/{DAG_ID}")
    button = page.get_by_test_id("trigger-dag-button")
    expect(button).to_have_text("Trigger")
    button.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text(f"Trigger Dag - {DAG_ID}")).to_be_visible()
    _check_form(dialog)
    for name, value in conf.items():
        field = dialog.get_by_role("spinbutton", name=name, exact=True)
        field.fill(str(value))
        field.blur()
        expect(field).to_have_value(str(value))
    # The whole dialog in one picture: a viewport as tall as the form, for the screenshot only.
    size = page.viewport_size
    page.set_viewport_size({"width": 1280, "height": 1480})
    dialog.get_by_text("Run Parameters").scroll_into_view_if_needed()
    page.wait_for_timeout(300)  # the dialog's opening animation
    dialog.screenshot(path=SCREENSHOTS / "trigger-form.png", animations="disabled")
    page.set_viewport_size(size)
    dialog.get_by_test_id("trigger-dag-submit").click()
    # The UI says so and goes to the new run's page.
    expect(page.get_by_text("Dag Run Triggered").first).to_be_visible()  # the toast may render twice
    page.wait_for_url(re.compile(rf"/dags/{DAG_ID}/runs/[^/?#]+$"))
    return unquote(page.url.rsplit("/", 1)[1])


# -- the test -------------------------------------------------------------------------------


def test_trigger_form_reruns_only_the_changed_steps(airflow_stack: AirflowStack, page: Any) -> None:
    from playwright.sync_api import expect

    stack = airflow_stack
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    def lap(name: str) -> None:
        timings[name] = round(time.monotonic() - t0 - sum(timings.values()), 1)

    _unpause(stack)
    try:
        lap("unpause")
        login(page, stack)
        lap("login")
        param, value = CHANGED
        ui_conf = {**BASE_CONF, param: value}
        for attempt in (1, 2):
            # The warm run: every step of BASE_CONF in the store (computed, or hits already).
            warm, _ = _finish(stack, stack.trigger(DAG_ID, BASE_CONF))
            lap(f"warm run {attempt}")
            run_id = trigger_in_ui(page, stack, ui_conf)
            lap(f"trigger form {attempt}")
            run, states = _finish(stack, run_id)
            lap(f"ui run {attempt}")
            if _date(run) == _date(warm) or attempt == 2:
                break
            print("\n[e2e-ui] crossed midnight UTC between the runs (the date is in the keys): again")
        print(f"\n[e2e-ui] {run_id}: {run['state']} {states}")

        # The form sent every param, with JSON types (numbers as numbers), as a manual run.
        defaults = {name: default for name, _, default, _, _ in PARAMS}
        assert run["conf"] == {**defaults, **ui_conf, "force_rerun": False}
        assert run["run_type"] == "manual"
        assert run.get("triggering_user_name", stack.username) == stack.username
        # Only the steps that use the changed param (or its results) ran again.
        assert states == {
            **{f"{step}.check": "success" for step in STEPS},
            **{f"{step}.run": ("success" if step in RERUN else "skipped") for step in STEPS},
        }

        # The graph view: one task group per step, named after it, holding check and run.
        expect(page.get_by_text(run_id).first).to_be_visible()
        page.get_by_role("button", name=re.compile(r"^Show Graph")).click()
        nodes = page.locator(".react-flow__node")
        expect(nodes).to_have_count(len(STEPS))
        assert [n.get_attribute("data-id") for n in nodes.all()] == list(STEPS)
        for step in STEPS:
            expect(page.locator(f".react-flow__node[data-id='{step}']")).to_contain_text(
                re.compile(rf"^\s*{step}\s*Task Group")
            )
        page.get_by_test_id("expand-all-button").click()
        expect(nodes).to_have_count(3 * len(STEPS))
        for step in STEPS:
            expect(page.locator(f".react-flow__node[data-id='{step}.check']")).to_contain_text("CacheCheckSensor")
            expect(page.locator(f".react-flow__node[data-id='{step}.check']")).to_contain_text("success")
            run_node = page.locator(f".react-flow__node[data-id='{step}.run']")
            expect(run_node).to_contain_text("success" if step in RERUN else "skipped")
        # The picture: the graph alone, in a viewport as low as the graph; without the toasts
        # (Chakra pauses their timers while the headless page has no focus).
        page.get_by_role("button", name="Collapse Details Panel").click()
        size = page.viewport_size
        page.set_viewport_size({"width": 1440, "height": 560})
        page.get_by_role("button", name="Fit View").click()
        page.wait_for_timeout(500)  # React Flow animates the fit
        page.screenshot(
            path=SCREENSHOTS / "graph-view.png", animations="disabled", style="[data-scope=toast] {display: none}"
        )
        page.set_viewport_size(size)
        # Back to the grid, which leaves the task pages below their width (the UI remembers it).
        page.get_by_role("button", name=re.compile(r"^Show Grid")).click()
        lap("graph view")

        # The checks' logs say HIT or MISS among their first lines.
        keys: dict[str, str] = {}
        for step, word in (("prepare", "HIT"), ("train", "MISS")):
            page.goto(f"{stack.base_url}/dags/{DAG_ID}/runs/{run_id}/tasks/{step}.check")
            line = (
                page.get_by_test_id("virtualized-list")
                .locator("[data-testid^='virtualized-item-']")
                .filter(has_text=f"mlpipe cache {word} for step `{step}`")
            )
            expect(line).to_have_count(1)
            number = int(line.locator("a").first.inner_text())
            assert number <= 10, f"the {word} line of {step}.check is line {number} of the log"
            found = re.search(r"\(key ([0-9a-f]{12})\)", line.inner_text())
            assert found, line.inner_text()
            keys[step] = found.group(1)
            if word == "HIT":
                assert f"outputs computed by {DAG_ID}/{warm['dag_run_id']}" in line.inner_text()
                page.screenshot(path=SCREENSHOTS / "check-log-hit.png")
            else:
                assert f"param `{param}` (4 → {value})" in line.inner_text()
        lap("check logs")

        # The "Manifest" extra link (airflow_mlpipe.links) in the task instance's Details tab:
        # on a check that hit, to the result it found; on a run, to the result it computed.
        # Following the run's shows that manifest.
        for task_id, step in (("prepare.check", "prepare"), ("train.run", "train")):
            page.goto(f"{stack.base_url}/dags/{DAG_ID}/runs/{run_id}/tasks/{task_id}/details")
            expect(page.get_by_text("Extra Links")).to_be_visible()
            link = page.get_by_role("link", name="Manifest", exact=True)
            expect(link).to_have_attribute("href", MANIFEST_HREF)
            href = link.get_attribute("href")
            found = MANIFEST_HREF.search(href or "")
            assert found, href
            key = found.group(1)
            assert key.startswith(keys[step]), (task_id, href, keys)
        page.screenshot(path=SCREENSHOTS / "manifest-link.png")
        link.click()
        page.wait_for_url(href)
        body = page.locator("body")
        expect(body).to_contain_text(key)
        expect(body).to_contain_text(f'"{param}":{value}')
        lap("manifest link")
    finally:
        stack.pause(DAG_ID)
    assert stack.dag(DAG_ID)["is_paused"] is True
    print(f"[e2e-ui] timings (s): {timings}; screenshots in {SCREENSHOTS}")
