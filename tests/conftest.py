"""Fixtures: colour frames, an in-process app for pytest-tornado, a real server
process, and real browsers of three engines; the processes themselves are harness/'s."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
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
@pytest.fixture(scope="module", params=ENGINES)
def browser(request: pytest.FixtureRequest) -> Iterator:
    """One browser per engine per test module (harness/browsers.py): Chromium under
    Playwright, firefox-esr over WebDriver BiDi, WebKitGTK under Xvfb.  Module
    scope, not session: Playwright's sync API keeps an event loop marked running
    while it lives, which would stop pytest-tornado's loop in the modules that follow."""
    try:
        started = launch(request.param)
    except BrowserError as exc:
        pytest.fail(f"{request.param}: {exc}")
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
