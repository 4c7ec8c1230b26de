"""A real ``nats-server`` for the tests and benchmarks (Debian's, installed by scripts/test.sh)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

from harness.process import stop_process

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


class NatsServer:
    """``nats-server`` on a free loopback port, started and ended by its PID;
    ``extra``: more of its options (``--user``, ``--tls``...); ``config``: the text
    of a configuration file (``authorization { ... }``, ``max_payload``), written
    to ``folder/nats.conf`` and given with ``-c``."""

    def __init__(self, folder: Path, *extra: str, config: str | None = None) -> None:
        self.folder = folder
        self.extra = list(extra)
        if config is not None:
            conf = folder / "nats.conf"
            conf.write_text(config)
            self.extra += ["-c", str(conf)]
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self, port: int = -1) -> NatsServer:
        log = self.folder / "nats.log"
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), "-l", str(log), *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            text = log.read_text() if log.exists() else ""
            found = re.findall(r"Listening for client connections on 127\.0\.0\.1:(\d+)", text)
            if found and (port == -1 or int(found[-1]) == port):
                self.port = int(found[-1])
                return self
            assert self.proc.poll() is None, f"nats-server exited: {text}"
            assert time.monotonic() < deadline, f"nats-server did not start: {text}"
            time.sleep(0.05)  # polling its log with a deadline

    def log_text(self) -> str:
        """What the server logged so far (its ``-l`` file)."""
        log = self.folder / "nats.log"
        return log.read_text(errors="replace") if log.exists() else ""

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.proc = None
