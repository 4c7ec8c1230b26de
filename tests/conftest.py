"""Fixtures: colour frames, an in-process app for pytest-tornado, a real server
process, and real browsers of three engines; the processes themselves are harness/'s."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import server
from feed import FrameFeed
from harness.browsers import ENGINES, VIEWPORT, BrowserError, launch
from harness.colours import write_colour_frames
from harness.process import ROOT, ServerProcess
from outputs.variants import Variants


@pytest.fixture
def frames_dir(tmp_path: Path) -> Path:
    return write_colour_frames(tmp_path / "frames")


@pytest.fixture(autouse=True)
def no_error_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Any ERROR logged during a test fails it."""
    caplog.set_level(logging.INFO)
    yield
    errors = [
        r
        for phase in ("setup", "call", "teardown")
        for r in caplog.get_records(phase)  # type: ignore[arg-type]
        if r.levelno >= logging.ERROR
    ]
    if errors:
        pytest.fail("unexpected ERROR log: " + "; ".join(r.getMessage() for r in errors))


# -- an in-process server for pytest-tornado ---------------------------------
@pytest.fixture
def settings(frames_dir: Path) -> server.Settings:
    """The files camera over the colour frames at 30 fps; override per module."""
    return server.Settings.single("files", str(frames_dir), fps=30, idle_timeout_s=10)


@pytest.fixture
def feed(settings: server.Settings) -> Iterator[FrameFeed]:
    feed = server.make_feed(settings)
    yield feed
    feed.close()


@pytest.fixture
def variants(settings: server.Settings, feed: FrameFeed) -> Variants:
    """The feed's variants, attached to it (the feed closes them)."""
    return server.make_variants(settings, {feed.name: feed})[feed.name]


@pytest.fixture
def app(settings: server.Settings, feed: FrameFeed, variants: Variants):
    return server.make_app(settings, feed, variants={feed.name: variants})


@pytest.fixture
def port(http_server, http_port: int) -> int:
    """The loopback port of a running in-process server (pytest-tornado)."""
    return http_port


def run_private(coroutine):
    """Run ``coroutine`` to its end on a loop of its own, closed after, without touching
    the thread's current event loop (asyncio.run resets it, and so frees whatever loop
    an earlier test left there: its "unclosed" warning would land on this test)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


# -- the command line and a real server process ---------------------------------
def assert_one_line_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    """The command exited 2 with one line on stderr that contains ``message``, no traceback."""
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python server.py ARGS`` to completion, with a bare environment (plus ``env``)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "server.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    """``start_server(*args, env=None)`` runs a server process, stopped after the test."""
    started: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        logs = tmp_path / f"server{len(started)}"
        logs.mkdir()
        proc = ServerProcess(list(args), logs / "server", env).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
        text = proc.log_text()
        assert "Traceback" not in text, text
        assert " ERROR " not in text, text


# -- real browsers of three engines -------------------------------------------------
def start_browser(engine: str):
    try:
        return launch(engine)
    except BrowserError as exc:
        pytest.fail(f"{engine}: {exc}")


@pytest.fixture(scope="session")
def kept_browsers() -> Iterator[dict]:
    """Firefox and WebKit (its Xvfb display), each started at its first use and kept
    until the session ends: a firefox-esr takes seconds of CPU to start, once per
    session (per pytest-xdist worker), not once per module.  Every page is still new:
    a user context of its own in Firefox, a driver session (a MiniBrowser) in WebKit."""
    kept: dict = {}
    yield kept
    for started in kept.values():
        started.close()


@pytest.fixture(scope="module", params=ENGINES)
def browser(request: pytest.FixtureRequest, kept_browsers: dict) -> Iterator:
    """One browser per engine (harness/browsers.py): Chromium under Playwright,
    firefox-esr over WebDriver BiDi, WebKitGTK under Xvfb.  Chromium is one per
    test module, not per session: Playwright's sync API keeps an event loop marked
    running while it lives, which would stop pytest-tornado's loop in the modules
    that follow.  The other two are kept for the session (:func:`kept_browsers`)."""
    engine = request.param
    if engine != "chromium":
        if engine not in kept_browsers:
            kept_browsers[engine] = start_browser(engine)
        yield kept_browsers[engine]
        return
    started = start_browser(engine)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def engine(browser) -> str:
    """The engine of this test's browser: chromium, firefox or webkit."""
    return browser.name


@pytest.fixture
def new_page(browser) -> Iterator:
    """``new_page(viewport=(w, h), java_script_enabled=True)``: a page of its own
    (Playwright's browser context), closed after the test."""
    pages: list = []

    def new(viewport: tuple[int, int] = VIEWPORT, java_script_enabled: bool = True):
        pages.append(browser.new_page(viewport=viewport, java_script_enabled=java_script_enabled))
        return pages[-1]

    yield new
    for opened in pages:
        opened.close()


@pytest.fixture
def page(new_page):
    """A 1280x720 page in this test's engine, with Playwright's Page API (harness/browsers.py)."""
    return new_page()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failure: every test must run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI") and skipped and exitstatus == 0:
        reporter.write_line(f"error: {len(skipped)} test(s) skipped; in CI every test must run", red=True)
        session.exitstatus = 1


# -- sharing the machine with pytest-xdist's other workers ---------------------------
# scripts/test.sh runs the suite on several workers (pytest-xdist).  A test marked
# ``alone`` measures rates or times on this machine (frames per second, a pace, a
# deadline of a second or so), or reads what other tests change on it (its network
# interfaces): it runs while no other test of the run does.  Every test holds a lock
# of the run from its setup to its teardown, shared, and an ``alone`` test holds it
# exclusively.  A lock, not a pause: nothing waits a fixed time.
# On a worker the ``alone`` tests come last, so that they mostly run one after the
# other at the end (a worker keeps the lock from one to the next), rather than each
# stopping every worker in the middle of the run.
MACHINE_FOLDER = pytest.StashKey[str]()
MACHINE_LOCK = pytest.StashKey["MachineLock"]()
WORKER_INPUT = "camstream_machine_lock"


def alone(item: pytest.Item | None) -> bool:
    return item is not None and item.get_closest_marker("alone") is not None


class MachineLock:
    """A readers-writer lock between the processes of one run: ``flock`` of two files in
    ``folder``.  Writers first: every taker passes the gate (held a moment), and a
    writer keeps it while it waits for the readers to finish, so no new reader starts."""

    def __init__(self, folder: Path) -> None:
        self._gate = open(folder / "gate", "a")  # noqa: SIM115 - open while the worker runs
        self._machine = open(folder / "machine", "a")  # noqa: SIM115
        #: How this process holds it now: None, "shared" or "exclusive".
        self.held: str | None = None

    def acquire(self, exclusive: bool) -> None:
        wanted = "exclusive" if exclusive else "shared"
        if self.held == wanted:
            return
        self.release()
        fcntl.flock(self._gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._machine, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            self.held = wanted
        finally:
            fcntl.flock(self._gate, fcntl.LOCK_UN)

    def release(self) -> None:
        if self.held is not None:
            fcntl.flock(self._machine, fcntl.LOCK_UN)
            self.held = None

    def close(self) -> None:
        self.release()
        self._gate.close()
        self._machine.close()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """(pytest-xdist's controller, for each worker it starts) The folder of the run's lock."""
    stash = node.config.stash
    if MACHINE_FOLDER not in stash:
        stash[MACHINE_FOLDER] = tempfile.mkdtemp(prefix="camstream-tests-")
    node.workerinput[WORKER_INPUT] = stash[MACHINE_FOLDER]


def pytest_configure(config: pytest.Config) -> None:
    folder = getattr(config, "workerinput", {}).get(WORKER_INPUT)
    if folder:  # a worker of pytest-xdist: a run of one process needs no lock
        config.stash[MACHINE_LOCK] = MachineLock(Path(folder))


def pytest_unconfigure(config: pytest.Config) -> None:
    if MACHINE_LOCK in config.stash:
        config.stash[MACHINE_LOCK].close()
    if MACHINE_FOLDER in config.stash:
        shutil.rmtree(config.stash[MACHINE_FOLDER], ignore_errors=True)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a worker (every worker collects the same list): the ``alone`` tests last, each
    part in its order (trylast: after pytest has ordered them by their fixtures)."""
    if MACHINE_LOCK in config.stash:
        items[:] = [i for i in items if not alone(i)] + [i for i in items if alone(i)]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    lock = item.config.stash.get(MACHINE_LOCK, None)
    if lock is None:
        return (yield)
    lock.acquire(exclusive=alone(item))
    try:
        return (yield)
    finally:
        if not (alone(item) and alone(nextitem)):
            lock.release()
