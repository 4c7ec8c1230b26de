"""The wall display's unit (docs/camstream-kiosk.service) and its script (docs/kiosk-browser.sh):
the unit checked by systemd-analyze, the script run for real under an Xvfb of its own with
Debian's Chromium against a server process: the kiosk's heartbeat reaches /status, and after a
kill -9 of the browser, or of its page's renderer, a new browser's heartbeat comes by itself.

systemd does not run in this container: the script is what is run; it restarts the browser
itself.  The browser's processes are found among the script's descendants (by parent PID in
/proc), never by name."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from harness.process import ROOT, stop_process

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "docs" / "kiosk-browser.sh"
UNIT = ROOT / "docs" / "camstream-kiosk.service"
CHROMIUM = "/usr/bin/chromium"
SIZE = (1280, 720)
CAMERA = ("--camera", "emulated", "--fps", "10", "--width", "640", "--height", "480")
#: A browser's start and the page's first heartbeat, on 2 busy cores.
START_S = 60


# -- the unit -----------------------------------------------------------------------
def unit_entries(text: str) -> dict[tuple[str, str], list[str]]:
    """(section, key) -> values of a systemd unit (keys may repeat; continuation lines joined)."""
    entries: dict[tuple[str, str], list[str]] = {}
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.setdefault((section, key.strip()), []).append(value.strip())
    return entries


def test_the_unit_restarts_always_and_runs_the_script():
    entries = unit_entries(UNIT.read_text())
    assert entries[("Service", "Restart")] == ["always"]
    assert entries[("Service", "RestartSec")] == ["2"]
    assert entries[("Unit", "StartLimitIntervalSec")] == ["0"], "systemd must never give up"
    (command,) = entries[("Service", "ExecStart")]
    program, url = command.split()
    assert program == "/opt/camstream/docs/kiosk-browser.sh" and url.endswith("/kiosk")
    assert f"install -D -m 755 docs/kiosk-browser.sh {program}" in UNIT.read_text(), "the install line"
    assert entries[("Install", "WantedBy")] == ["graphical.target"]
    assert os.access(SCRIPT, os.X_OK), "the script is executable"


def test_systemd_analyze_verifies_the_unit_without_a_word(tmp_path: Path):
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is missing: run scripts/test.sh, which installs systemd")
    # A root of its own: the unit where systemd looks, the script where ExecStart says,
    # and systemd's own units (the targets it names).
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system/camstream-kiosk.service")
    (root / "opt/camstream/docs").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "opt/camstream/docs/kiosk-browser.sh")
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "camstream-kiosk.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    assert result.stdout.strip() == "", result.stdout


# -- the script's refusals ----------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        ([], {}, "usage: kiosk-browser.sh URL"),
        (["http://127.0.0.1:1/kiosk", "extra"], {}, "usage"),
        (["http://127.0.0.1:1/kiosk"], {"CAMSTREAM_KIOSK_DISPLAY": "vga"}, "CAMSTREAM_KIOSK_DISPLAY is"),
        (["http://127.0.0.1:1/kiosk"], {"CAMSTREAM_KIOSK_SIZE": "big"}, "CAMSTREAM_KIOSK_SIZE is"),
        (["http://127.0.0.1:1/kiosk"], {"CAMSTREAM_KIOSK_WATCHDOG_S": "-1"}, "whole seconds"),
        (["http://127.0.0.1:1/kiosk"], {"CAMSTREAM_KIOSK_BROWSER": "/nonexistent"}, "no Chromium found"),
    ],
)
def test_the_script_refuses_bad_settings_in_one_line(args, env, says):
    result = subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "CAMSTREAM_KIOSK_BROWSER": CHROMIUM, **env},
    )
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


# -- the script, for real ---------------------------------------------------------------
def parents() -> dict[int, int]:
    """Every process's parent, from /proc (processes that end meanwhile are passed over)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        found[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def descendants(pid: int) -> list[int]:
    tree = parents()
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = [child for child, of in tree.items() if of == parent]
        out += children
        todo += children
    return out


def cmdline(pid: int) -> list[str]:
    """A process's arguments, split at spaces too (Chromium's children rewrite theirs as one)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ").split()
    except OSError:
        return []


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class KioskScript:
    """``docs/kiosk-browser.sh URL`` as a process of its own, its log kept."""

    def __init__(self, url: str, folder: Path, watchdog_s: int) -> None:
        self.kiosk_id = "test-" + uuid.uuid4().hex[:12]
        self.log_path = folder / "kiosk-browser.log"
        self.runtime = folder / "runtime"
        self.runtime.mkdir()
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(folder),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "CAMSTREAM_KIOSK_BROWSER": CHROMIUM,
            "CAMSTREAM_KIOSK_DISPLAY": "xvfb",
            "CAMSTREAM_KIOSK_SIZE": f"{SIZE[0]}x{SIZE[1]}",
            "CAMSTREAM_KIOSK_ID": self.kiosk_id,
            "CAMSTREAM_KIOSK_WATCHDOG_S": str(watchdog_s),
            "CAMSTREAM_KIOSK_ARGS": "--disable-gpu",
        }
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["bash", str(SCRIPT), url], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder
            )
        self.seen: set[int] = set()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def descendants(self) -> list[int]:
        found = descendants(self.proc.pid)
        self.seen.update(found)
        return found

    def browser(self) -> int | None:
        """The browser the script runs now (its child with --kiosk in its arguments)."""
        tree = parents()
        for pid in self.descendants():
            if tree.get(pid) == self.proc.pid and "--kiosk" in cmdline(pid) and running(pid):
                return pid
        return None

    def renderers(self, browser: int) -> list[int]:
        return [pid for pid in descendants(browser) if "--type=renderer" in cmdline(pid)]

    def stop(self) -> int:
        """SIGTERM the script (it ends what it started); its status.  Whatever of its
        processes outlives it is ended by PID here, and the test fails on it."""
        self.descendants()
        code = stop_process(self.proc, timeout_s=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(running(pid) for pid in self.seen):
            time.sleep(0.1)  # polling /proc, with a deadline
        left = [pid for pid in self.seen if running(pid) and cmdline(pid)]
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"processes of the script outlived it: {left}"
        return code


def kiosk_of(proc, kiosk_id: str) -> dict | None:
    status, _, body = proc.get("status")
    if status != 200:
        return None
    found = [k for k in json.loads(body)["kiosks"] if k["id"] == kiosk_id]
    return found[0] if found else None


def wait_kiosk(proc, script: KioskScript, predicate, timeout_s: float, what: str) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        kiosk = kiosk_of(proc, script.kiosk_id)
        if kiosk is not None and predicate(kiosk):
            return kiosk
        assert script.proc.poll() is None, f"the script ended:\n{script.log()}"
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout_s} s: {kiosk}\n{script.log()}")
        time.sleep(0.2)  # polling /status, with a deadline


@pytest.fixture
def kiosk_script(tmp_path: Path):
    """``kiosk_script(url, watchdog_s)``: the script running, stopped after the test."""
    started: list[KioskScript] = []

    def start(url: str, watchdog_s: int = 60) -> KioskScript:
        started.append(KioskScript(url, tmp_path, watchdog_s))
        return started[-1]

    yield start
    for script in started:
        if script.proc.poll() is None:
            script.stop()


def live_with(connections: int):
    return lambda k: k["state"] == "live" and k["connections"] == connections and (k["frames_shown"] or 0) > 0


@pytest.mark.alone  # a browser's restart within a deadline, on a machine that is not busy elsewhere
def test_a_killed_browser_and_a_dead_page_come_back_by_themselves(start_server, kiosk_script):
    server = start_server(*CAMERA)
    script = kiosk_script(server.url + "kiosk", watchdog_s=10)
    first = wait_kiosk(server, script, live_with(1), START_S, "the kiosk's first heartbeat")
    assert first["page"] == "/kiosk" and first["transport"] == "ws" and first["camera"] == "emulated"
    # Full screen: the page has the whole screen of the script's Xvfb (no bars, no frame).
    assert first["screen"] == list(SIZE)
    assert all(abs(a - b) <= 2 for a, b in zip(first["viewport"], SIZE, strict=True)), first["viewport"]
    browser = script.browser()
    assert browser is not None, script.log()

    # The whole browser, kill -9: the script starts another (its page: a new connection).
    os.kill(browser, signal.SIGKILL)
    wait_kiosk(server, script, live_with(2), START_S, "a new browser's heartbeat")
    assert "browser ended (status 137)" in script.log()
    second = script.browser()
    assert second is not None and second != browser

    # Its page's renderer, kill -9: the browser lives on with a dead page, which the
    # server no longer hears; the script's watchdog restarts the browser.
    renderers = script.renderers(second)
    assert renderers, "no renderer among the browser's processes"
    for pid in renderers:
        os.kill(pid, signal.SIGKILL)
    wait_kiosk(server, script, lambda k: k["state"] == "gone", 10, "the dead page gone")
    assert script.browser() == second, "the browser itself lives on"
    wait_kiosk(server, script, live_with(3), 15 + START_S, "the restarted browser's heartbeat")
    assert "has not been live" in script.log()
    assert script.browser() not in (None, second)

    # SIGTERM ends the browser, its Xvfb and the script, and leaves nothing behind.
    assert script.stop() == 0, script.log()
    assert not list(script.runtime.glob("camstream-kiosk.*")), "the script's folder is left behind"
    assert "Traceback" not in script.log()


@pytest.mark.alone  # the browser is left alone for longer than the watchdog's limit
def test_the_watchdog_leaves_the_browser_alone_while_the_server_is_down(start_server, kiosk_script):
    server = start_server(*CAMERA)
    script = kiosk_script(server.url + "kiosk", watchdog_s=15)
    wait_kiosk(server, script, live_with(1), START_S, "the kiosk's first heartbeat")
    browser = script.browser()
    assert browser is not None
    server.stop()
    # Longer than the watchdog's limit: the page is not heard, but nor is the server, so
    # the browser (whose page reconnects by itself) is at no fault.
    until = time.monotonic() + 25
    while time.monotonic() < until:
        assert script.browser() == browser, f"the browser was restarted:\n{script.log()}"
        time.sleep(0.5)  # watching /proc for the duration
    server.start()
    # A new server process, a new list: the same page (never reloaded) in it.
    back = wait_kiosk(server, script, live_with(1), 30, "the same page back on the restarted server")
    assert back["page_uptime_s"] > 15 and back["reconnects"] >= 1
    assert script.browser() == browser
    assert "restarting the browser" not in script.log()
