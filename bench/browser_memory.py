"""A browser's memory over a long run of one camstream page: the trend in MB per hour.

    .venv/bin/python bench/browser_memory.py --engine chromium --page /kiosk [--minutes 30]
        [--interval 60] [--warmup 3] [--json out.json]

A wall display shows /kiosk for weeks, so its browser must not grow.  This starts
a camstream server itself (``server.py --camera emulated --width 1280 --height
720 --fps 30`` on a free loopback port, read from its log line ``on
http://127.0.0.1:PORT/``), opens one page in one engine with a 1280x720
viewport, and every ``--interval`` seconds samples the browser's memory: the sum
of ``Pss`` (``/proc/PID/smaps_rollup``) over the whole process tree of the
process this script launched (renderers, GPU and network processes, web
processes), so memory that moves between processes is still counted once.

Engines (Debian's packages; no browser is downloaded):

- ``chromium``: ``/usr/bin/chromium`` through Playwright (``executable_path``),
  headless, ``--no-sandbox --disable-gpu --disable-quic --no-first-run
  --disable-background-networking --disable-component-update --disable-sync``.
  The tree is that of the browser process Playwright's driver started.
- ``firefox``: ``/usr/bin/firefox-esr --headless`` launched with the URL and a
  fresh profile whose ``prefs.js`` turns off updates, telemetry, safe browsing,
  the captive-portal and connectivity checks and remote settings; the page is
  read through Firefox's own WebDriver BiDi endpoint (``--remote-debugging-port``).
- ``webkit``: ``/usr/bin/WebKitWebDriver`` driven by Selenium
  (``webdriver.WebKitGTK``), which starts WebKitGTK's MiniBrowser, under an
  ``Xvfb`` display this script starts (``-displayfd``: Xvfb picks a free
  display).  The tree is that of WebKitWebDriver (MiniBrowser, WebKitWebProcess,
  WebKitNetworkProcess); Xvfb's own memory is reported apart.

Pages: ``/`` (the MJPEG ``<img>`` page), ``/kiosk`` (the WebSocket canvas path),
``/kiosk?mode=mjpeg`` (the kiosk's ``<img>`` path), or any path of the server.
On ``/kiosk`` each sample also reads ``window.camstream.framesShown`` and reports
the frames per second shown (in ``mjpeg`` mode that counter is the watchdog's
picture changes, at most 2 per second, so it is not a frame rate).

Output: one line per sample on standard error, then a Markdown table row on
standard output (engine, page, first, last and peak MB, the trend in MB/h, the
minutes run, the fps shown) and, with ``--json``, every sample in a JSON file.
The trend is the least-squares slope over the samples taken after the first
``--warmup`` minutes.

Every process it starts (server, Xvfb, browser and driver, and what they left
behind) is stopped by its PID when the run ends, on an error, on Ctrl-C or on
SIGTERM; every wait has a deadline, so the run ends within about ``--minutes``
plus a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
log = logging.getLogger("bench.browser_memory")

# The engines' programs and Chromium's flags, as the page tests run them.
from harness.browsers import CHROMIUM, FIREFOX, WEBKIT_DRIVER, XVFB  # noqa: E402
from harness.browsers import CHROMIUM_ARGS as CHROMIUM_FLAGS  # noqa: E402

WIDTH, HEIGHT = 1280, 720
START_TIMEOUT_S = 60.0

#: Firefox preferences of a fresh profile: no update, telemetry, safe browsing,
#: captive-portal or connectivity check, remote settings, or other background traffic.
FIREFOX_PREFS = {
    "app.update.enabled": False,
    "app.update.auto": False,
    "app.update.disabledForTesting": True,
    "app.normandy.enabled": False,
    "app.shield.optoutstudies.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.aboutwelcome.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.update.enabled": False,
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "browser.safebrowsing.provider.google4.updateURL": "",
    "browser.ping-centre.telemetry": False,
    "browser.newtabpage.activity-stream.feeds.telemetry": False,
    "browser.newtabpage.activity-stream.telemetry": False,
    "browser.newtabpage.enabled": False,
    "browser.discovery.enabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.archive.enabled": False,
    "toolkit.telemetry.server": "",
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "captivedetect.canonicalURL": "",
    "services.settings.server": "",
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.blocklist.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "media.gmp-manager.url": "",
    "media.gmp-gmpopenh264.enabled": False,
    "geo.enabled": False,
    "dom.push.enabled": False,
    "remote.prefs.recommended": True,
}


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived: the run stops and cleans up like on Ctrl-C."""


# -- processes ------------------------------------------------------------------


def start_time(pid: int) -> int | None:
    """The start time (clock ticks after boot) of ``pid``, or None if it is gone.

    With the PID it names one process for good: a recycled PID has another start time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (from every thread's ``children`` file)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found.extend(int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split())
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that are alive now, parents first."""
    result, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        if current in result or start_time(current) is None:
            continue
        result.append(current)
        todo.extend(children(current))
    return result


def memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, its anonymous part) of ``pid`` in KiB from ``smaps_rollup``; (0, 0) if it is gone.

    PSS shares each shared page among the processes mapping it, so its file part
    (program and library code) moves when other programs on the machine start or
    stop with the same libraries (another browser, say).  The anonymous part
    (``Pss_Anon`` + ``Pss_Shmem``: heaps, decoded pictures, shared-memory
    buffers between the browser's own processes) is what the browser allocated
    itself, and what a leak grows; others' programs do not move it.
    """
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    fields = dict(re.findall(r"^(\w+):\s+(\d+) kB", text, re.MULTILINE))
    return int(fields.get("Pss", 0)), int(fields.get("Pss_Anon", 0)) + int(fields.get("Pss_Shmem", 0))


def pss_kb(pid: int) -> int:
    """The proportional set size of ``pid`` in KiB (0 if it is gone)."""
    return memory_kb(pid)[0]


def comm(pid: int) -> str:
    """The short name of ``pid``'s program ("?" if it is gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def role(pid: int) -> str:
    """``pid``'s program name, with Chromium's process type (``chromium:renderer``, ``chromium:gpu``)."""
    name = comm(pid)
    if name.startswith("chromium"):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
        except OSError:
            return name
        kinds = [a.split(b"=", 1)[1].decode() for a in args if a.startswith(b"--type=")]
        name += ":" + (kinds[0].replace("-process", "") if kinds else "browser")
    return name


class Reaper:
    """Every process the run started or saw in a browser's tree, ended by PID at the end.

    ``watch`` records (pid, start time) so that only that very process is ever
    signalled; ``stop_all`` sends SIGTERM to each still alive, waits up to 10 s,
    then SIGKILLs the rest.  Children are recorded before their parent dies and
    they are handed to init, so nothing a browser started is left behind.
    """

    def __init__(self) -> None:
        self._known: dict[int, int] = {}
        self._popen: list[subprocess.Popen] = []

    def watch(self, pid: int) -> None:
        """Remember ``pid`` (if alive) to be stopped at the end."""
        started = start_time(pid)
        if started is not None:
            self._known.setdefault(pid, started)

    def watch_tree(self, pid: int) -> list[int]:
        """Remember ``pid`` and all its descendants; returns them."""
        pids = tree(pid)
        for each in pids:
            self.watch(each)
        return pids

    def adopt(self, proc: subprocess.Popen) -> subprocess.Popen:
        """Remember a process this script started (reaped with ``wait``)."""
        self._popen.append(proc)
        self.watch(proc.pid)
        return proc

    def _alive(self) -> list[int]:
        return [pid for pid, started in self._known.items() if start_time(pid) == started]

    def stop_all(self) -> None:
        """SIGTERM, then SIGKILL after 10 s, to every remembered process still alive."""
        for proc in self._popen:
            with contextlib.suppress(OSError):
                self.watch_tree(proc.pid)
        for pid in self._alive():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for proc in self._popen:
                proc.poll()
            if not self._alive():
                break
            time.sleep(0.1)  # polling for exits of processes that are not our children
        for pid in self._alive():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for proc in self._popen:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def wait_for_line(stream: Any, pattern: bytes, timeout_s: float, what: str) -> re.Match[bytes]:
    """Read ``stream`` (a pipe) until a line matches ``pattern``; RuntimeError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = stream.readline()
        if not line:
            break
        seen = (seen + line)[-4000:]
        found = re.search(pattern, line)
        if found:
            return found
    raise RuntimeError(f"{what} did not start: {seen.decode(errors='replace')[-1000:]}")


def drain(stream: Any) -> None:
    """Read a pipe to its end on a daemon thread, so the writer never blocks on a full pipe."""
    import threading

    threading.Thread(target=lambda: [None for _ in iter(stream.readline, b"")], daemon=True).start()


def start_server(reaper: Reaper, args: argparse.Namespace) -> str:
    """Start camstream on a free loopback port; returns its base URL."""
    command = [
        *(str(ROOT / ".venv/bin/python"), str(ROOT / "server.py"), "--host", "127.0.0.1", "--port", "0"),
        *("--camera", "emulated", "--width", str(WIDTH), "--height", str(HEIGHT), "--fps", str(args.fps)),
    ]
    proc = reaper.adopt(
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
    )
    found = wait_for_line(proc.stdout, rb"on http://127\.0\.0\.1:(\d+)/", 30, "the camstream server")
    drain(proc.stdout)
    return f"http://127.0.0.1:{int(found.group(1))}"


# -- engines ----------------------------------------------------------------------

#: The page's frame counter (kiosk, viewer) and the kiosk's decode method, where it has them.
FRAMES_SHOWN = "return (window.camstream && window.camstream.framesShown) ?? null"
DECODER = "return (window.camstream && window.camstream.ws && window.camstream.ws.decoder) ?? null"


class Engine:
    """One browser showing one page: its root PID (for the tree) and a way to read the page."""

    name = "?"

    def __init__(self, reaper: Reaper, workdir: Path) -> None:
        self.reaper = reaper
        self.workdir = workdir
        self.root_pid = 0
        self.extra_pids: dict[str, int] = {}  # processes measured apart (Xvfb)
        self.user_agent = ""
        self.log_path: Path | None = None  # where the browser's own output goes (None: nowhere)

    def open(self, url: str) -> None:
        """Start the browser on ``url``; returns once the page has loaded."""
        raise NotImplementedError

    def evaluate(self, body: str) -> Any:
        """Run ``body`` (a function body ending in ``return``) in the page; its JSON value."""
        raise NotImplementedError

    def frames_shown(self) -> int | None:
        """``window.camstream.framesShown`` of the page, or None where it has none."""
        return self.evaluate(FRAMES_SHOWN)

    def close(self) -> None:
        """Close the browser politely (the reaper stops whatever remains)."""


class Chromium(Engine):
    """Debian's chromium through Playwright, headless."""

    name = "chromium"

    def open(self, url: str) -> None:
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        mine = set(children(os.getpid()))
        self._browser = self._pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS, timeout=START_TIMEOUT_S * 1000
        )
        # The browser is the chromium child of Playwright's driver, which is our child.
        for pid in set(children(os.getpid())) | mine:
            self.reaper.watch(pid)
            for child in children(pid):
                if comm(child).startswith("chromium"):
                    self.root_pid = child
        if not self.root_pid:
            raise RuntimeError("the chromium browser process was not found")
        self.reaper.watch_tree(self.root_pid)
        self._page = self._browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        self._page.goto(url, wait_until="load", timeout=START_TIMEOUT_S * 1000)

    def evaluate(self, body: str) -> Any:
        return self._page.evaluate(f"() => {{ {body}; }}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._browser.close()
        with contextlib.suppress(Exception):
            self._pw.stop()


class Firefox(Engine):
    """Debian's firefox-esr, headless, fresh profile, read through its WebDriver BiDi endpoint."""

    name = "firefox"

    def open(self, url: str) -> None:
        profile = self.workdir / "firefox-profile"
        profile.mkdir()
        (profile / "prefs.js").write_text(
            "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in FIREFOX_PREFS.items())
        )
        command = [
            *(FIREFOX, "--headless", "--no-remote", "--profile", str(profile)),
            *("--width", str(WIDTH), "--height", str(HEIGHT), "--remote-debugging-port", "0", url),
        ]
        env = {**os.environ, "MOZ_CRASHREPORTER_DISABLE": "1", "HOME": str(self.workdir)}
        proc = self.reaper.adopt(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
        )
        self.root_pid = proc.pid
        found = wait_for_line(
            proc.stdout, rb"WebDriver BiDi listening on (ws://\S+)", START_TIMEOUT_S, "firefox"
        )
        drain(proc.stdout)
        import websocket

        self._ws = websocket.create_connection(
            found.group(1).decode() + "/session", timeout=30, suppress_origin=True
        )
        self._id = 0
        self._call("session.new", {"capabilities": {}})
        contexts = self._call("browsingContext.getTree", {})["contexts"]
        self._context = contexts[0]["context"]
        deadline = time.monotonic() + START_TIMEOUT_S
        while self._evaluate("document.readyState") != "complete" or not self._evaluate(
            "location.href.startsWith('http')"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("firefox did not load the page")
            time.sleep(0.2)  # polling the page's state; no event for it over this small client

    def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == self._id:
                if message.get("type") == "error":
                    raise RuntimeError(f"{method}: {message.get('message')}")
                return message["result"]

    def _evaluate(self, expression: str) -> Any:
        target = {"context": self._context}
        result = self._call(
            "script.evaluate", {"expression": expression, "target": target, "awaitPromise": False}
        )
        value = result.get("result", {})
        return value.get("value")

    def evaluate(self, body: str) -> Any:
        return self._evaluate(f"(() => {{ {body}; }})()")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call("session.end", {})
        with contextlib.suppress(Exception):
            self._ws.close()


class WebKit(Engine):
    """WebKitGTK's MiniBrowser through WebKitWebDriver and Selenium, under Xvfb."""

    name = "webkit"

    def open(self, url: str) -> None:
        read_fd, write_fd = os.pipe()
        xvfb = self.reaper.adopt(
            subprocess.Popen(
                [
                    XVFB,
                    "-displayfd",
                    str(write_fd),
                    "-screen",
                    "0",
                    f"{WIDTH}x{HEIGHT + 100}x24",
                    "-nolisten",
                    "tcp",
                ],
                pass_fds=(write_fd,),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        os.close(write_fd)
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            found = wait_for_line(pipe, rb"(\d+)", 30, "Xvfb")
        self.extra_pids["Xvfb"] = xvfb.pid
        display = f":{int(found.group(1))}"

        from selenium import webdriver
        from selenium.webdriver.webkitgtk.service import Service

        output = str(self.log_path) if self.log_path else subprocess.DEVNULL
        service = Service(
            executable_path=WEBKIT_DRIVER, env={**os.environ, "DISPLAY": display}, log_output=output
        )
        options = webdriver.WebKitGTKOptions()
        self._driver = webdriver.WebKitGTK(options=options, service=service)
        if service.process is not None:
            self.reaper.adopt(service.process)
            self.root_pid = service.process.pid
        self.reaper.watch_tree(self.root_pid)
        self._driver.set_page_load_timeout(START_TIMEOUT_S)
        self._driver.set_window_rect(0, 0, WIDTH, HEIGHT)
        self._driver.get(url)
        self.reaper.watch_tree(self.root_pid)

    def evaluate(self, body: str) -> Any:
        return self._driver.execute_script(body)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._driver.quit()


ENGINES: dict[str, type[Engine]] = {"chromium": Chromium, "firefox": Firefox, "webkit": WebKit}


# -- measurement --------------------------------------------------------------------


@dataclass
class Sample:
    """One look at the browser: seconds since the page loaded, PSS in MB, frames shown."""

    t_s: float
    pss_mb: float
    frames_shown: int | None
    processes: int
    anon_mb: float = 0.0
    by_program: dict[str, float] = field(default_factory=dict)
    extra_mb: dict[str, float] = field(default_factory=dict)
    decoder: str | None = None


def measure(engine: Engine, reaper: Reaper, t0: float) -> Sample:
    """Sum the PSS of the browser's tree now (and read the page's frame counter)."""
    by_program: dict[str, float] = {}
    pids = reaper.watch_tree(engine.root_pid)
    total_kb = anon_kb = 0
    for pid in pids:
        kb, own = memory_kb(pid)
        total_kb += kb
        anon_kb += own
        name = role(pid)
        by_program[name] = round(by_program.get(name, 0) + kb / 1024, 1)
    try:
        shown = engine.frames_shown()
    except Exception as exc:  # the driver's own error types differ per engine
        log.warning("could not read the page's frame counter: %s", exc)
        shown = None
    extra = {name: round(pss_kb(pid) / 1024, 1) for name, pid in engine.extra_pids.items()}
    decoder = None
    with contextlib.suppress(Exception):  # as above
        decoder = engine.evaluate(DECODER)
    total_mb = round(total_kb / 1024, 1)
    return Sample(
        t_s=round(time.monotonic() - t0, 1),
        pss_mb=total_mb,
        frames_shown=shown,
        processes=len(pids),
        anon_mb=round(anon_kb / 1024, 1),
        by_program=by_program,
        extra_mb=extra,
        decoder=decoder,
    )


def slope_per_hour(samples: list[Sample], key: str = "pss_mb") -> float | None:
    """The least-squares slope of ``key`` (PSS) over time, in MB per hour (None under 2 samples)."""
    if len(samples) < 2:
        return None
    xs = [s.t_s / 3600 for s in samples]
    ys = [getattr(s, key) for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def fps_shown(samples: list[Sample]) -> float | None:
    """Frames shown per second between the first and last sample that read the counter."""
    read = [s for s in samples if s.frames_shown is not None]
    if len(read) < 2 or read[-1].t_s <= read[0].t_s:
        return None
    return (read[-1].frames_shown - read[0].frames_shown) / (read[-1].t_s - read[0].t_s)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole run: server, browser, samples; stops everything it started, whatever happens."""
    reaper = Reaper()
    samples: list[Sample] = []
    workdir = Path(tempfile.mkdtemp(prefix="browser-memory-"))
    engine = ENGINES[args.engine](reaper, workdir)
    if args.json:
        engine.log_path = Path(args.json).with_suffix(".browser.log")
    url = ""
    try:
        base = start_server(reaper, args)
        url = base + args.page
        log.info("%s: opening %s", engine.name, url)
        engine.open(url)
        with contextlib.suppress(Exception):  # the driver's own error types differ per engine
            engine.user_agent = engine.evaluate("return navigator.userAgent")
        t0 = time.monotonic()
        end = t0 + args.minutes * 60
        next_at = t0
        while True:
            sample = measure(engine, reaper, t0)
            samples.append(sample)
            log.info(
                "%6.0f s  %7.1f MB (anon %7.1f)  %2d processes  frames shown %s  %s",
                sample.t_s,
                sample.pss_mb,
                sample.anon_mb,
                sample.processes,
                sample.frames_shown,
                " ".join(f"{k}={v}" for k, v in sorted(sample.by_program.items())),
            )
            if args.json:
                write_json(args, url, samples, engine.user_agent)
            next_at += args.interval
            if next_at > end + 1:
                break
            time.sleep(max(0.0, next_at - time.monotonic()))  # the sampling interval itself
        with (
            contextlib.suppress(OSError, ValueError),
            urllib.request.urlopen(base + "/status", timeout=5) as reply,
        ):
            status = json.loads(reply.read())
            keys = ("fps_measured", "frames_sent", "frames_skipped", "viewers", "camera_starts")
            log.info("server at the end: %s", {k: status.get(k) for k in keys})
    finally:
        engine.close()
        reaper.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return write_json(args, url, samples, engine.user_agent)


def summary(args: argparse.Namespace, url: str, samples: list[Sample], user_agent: str) -> dict[str, Any]:
    """First, last and peak MB, the trend after the warm-up, minutes run, fps shown."""
    after = [s for s in samples if s.t_s >= args.warmup * 60]
    trend = slope_per_hour(after)
    anon = slope_per_hour(after, "anon_mb")
    fps = fps_shown(samples)
    return {
        "engine": args.engine,
        "page": args.page,
        "url": url,
        "user_agent": user_agent,
        "decoder": samples[-1].decoder if samples else None,
        "interval_s": args.interval,
        "warmup_min": args.warmup,
        "minutes_run": round(samples[-1].t_s / 60, 1) if samples else 0,
        "first_mb": samples[0].pss_mb if samples else None,
        "last_mb": samples[-1].pss_mb if samples else None,
        "peak_mb": max(s.pss_mb for s in samples) if samples else None,
        "trend_mb_per_h": round(trend, 1) if trend is not None else None,
        "anon_trend_mb_per_h": round(anon, 1) if anon is not None else None,
        "fps_shown": round(fps, 1) if fps is not None else None,
        "samples": [asdict(s) for s in samples],
    }


def write_json(args: argparse.Namespace, url: str, samples: list[Sample], user_agent: str) -> dict[str, Any]:
    """The summary, also written to ``--json`` if given (rewritten after every sample)."""
    result = summary(args, url, samples, user_agent)
    if args.json:
        tmp = Path(args.json + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(args.json)
    return result


def table_row(result: dict[str, Any]) -> str:
    """The Markdown row: engine | page | first | last | peak | MB/h | minutes | fps."""

    def cell(value: Any) -> str:
        return "-" if value is None else str(value)

    cells = [result["engine"], f"`{result['page']}`"]
    cells += [cell(result[k]) for k in ("first_mb", "last_mb", "peak_mb", "trend_mb_per_h", "minutes_run")]
    cells.append(cell(result["fps_shown"]))
    return "| " + " | ".join(cells) + " |"


TABLE_HEADER = (
    "| engine | page | first MB | last MB | peak MB | trend MB/h | minutes | fps shown |\n"
    "|---|---|---|---|---|---|---|---|"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module's docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--engine", choices=sorted(ENGINES), default="chromium", help="default: chromium")
    parser.add_argument(
        "--page", default="/kiosk", help="path on the server, e.g. / or /kiosk?mode=mjpeg (default /kiosk)"
    )
    parser.add_argument("--minutes", type=float, default=30, help="how long to sample (default 30)")
    parser.add_argument("--interval", type=float, default=60, help="seconds between samples (default 60)")
    parser.add_argument("--warmup", type=float, default=3, help="minutes left out of the trend (default 3)")
    parser.add_argument("--fps", type=float, default=30, help="the emulated camera's frame rate (default 30)")
    parser.add_argument("--json", help="write the samples and the summary to this file")
    parser.add_argument("--header", action="store_true", help="print the table's header before the row")
    args = parser.parse_args(argv)
    if not args.page.startswith("/"):
        parser.error("--page is a path on the server: it starts with /")
    if args.interval <= 0 or args.minutes <= 0:
        parser.error("--interval and --minutes must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one measurement and print its table row; 130 on Ctrl-C, 1 on an error."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    def interrupt(signum: int, _frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    try:
        result = run(args)
    except (KeyboardInterrupt, Interrupted) as exc:
        log.error("interrupted (%s): every process started was stopped", type(exc).__name__)
        return 130
    except Exception:
        log.exception("the run failed: every process started was stopped")
        return 1
    if args.header:
        print(TABLE_HEADER)  # noqa: T201 - the table row is this script's output
    print(table_row(result))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
