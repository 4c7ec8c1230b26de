"""Processes on this machine: a free loopback port, pinning a process to a CPU, ending a
process by its PID within a deadline, and ``python server.py ARGS`` as a process of its own
(:class:`ServerProcess`)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

#: The checkout: where server.py is.
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port free on the loopback interface now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pin(pid: int, cpu: int) -> None:
    """Pin every thread of ``pid`` to ``cpu`` (when the machine has it; a benchmark's
    processes kept apart from each other)."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                os.sched_setaffinity(int(task), {cpu})


def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> int:
    """End one process we started, by its PID: SIGTERM, then SIGKILL after ``timeout_s``;
    its exit status.  Returns at once for one that has exited."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class ServerProcess:
    """``python server.py --host HOST --port PORT ARGS``; logs kept for inspection.

    ``host`` is loopback unless given (a shaped link's root side, see harness/netns.py);
    the port is the OS's choice at the first :meth:`start` and the same one after.
    :meth:`start` blocks until the server logs its URL, and raises RuntimeError (it
    exited) or TimeoutError (it did not start) with its log."""

    def __init__(
        self, args: list[str], log_path: Path, env: dict[str, str] | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.args = args
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.host = host
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self, timeout_s: float = 20.0) -> ServerProcess:
        self.starts += 1
        log_file = self.log_path.with_suffix(f".{self.starts}.log")
        with open(log_file, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "server.py"),
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                    *self.args,
                ],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        self.current_log = log_file
        pattern = re.compile(rf"on https?://{re.escape(self.host)}:(\d+)/")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = log_file.read_text(errors="replace")
            found = pattern.search(text)
            if found:
                self.port = int(found.group(1))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.05)  # polling the log file with a deadline
        self.stop()  # never leave a process behind
        raise TimeoutError(f"server did not start within {timeout_s} s:\n{log_file.read_text()}")

    def stop(self, timeout_s: float = 10.0) -> int:
        """End it by its PID (see :func:`stop_process`); its exit status, 0 if not running."""
        proc = self.proc
        if proc is None:
            return 0
        stop_process(proc, timeout_s)
        self.proc = None
        return proc.returncode

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.log_path.parent.glob("*.log")))

    def get(self, path: str, timeout_s: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.url + path.lstrip("/"))
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()
