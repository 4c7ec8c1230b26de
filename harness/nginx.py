"""A real nginx for the tests and benchmarks: Debian's ``/usr/sbin/nginx`` on a free
loopback port, every file it writes under one folder, ended by its PID."""

from __future__ import annotations

import http.client
import logging
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from harness.process import ROOT, free_port, stop_process

log = logging.getLogger(__name__)

NGINX = "/usr/sbin/nginx"

#: The main configuration; ``{http}`` is the test's own (its ``server`` blocks).
MAIN_CONF = """
{user}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 2048;
}}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
{other_temp_paths}
{http}
}}
"""


def fetch(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """``GET path`` on the loopback ``port``; redirects not followed; the body of
    a stream (an endless response) is not read."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        kind = response.getheader("Content-Type", "")
        body = b"" if kind.startswith("multipart/") else response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


class Nginx:
    """``nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'``.

    ``http(port)`` gives the text of the ``http`` block (its ``server``
    blocks, listening on 127.0.0.1:``port``); :meth:`start` waits until
    ``GET probe`` answers 200 through it."""

    def __init__(self, folder: Path, http: Callable[[int], str], probe: str) -> None:
        self.folder = folder
        self.http = http
        self.probe = probe
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def config(self) -> str:
        built = subprocess.run([NGINX, "-V"], capture_output=True, text=True, timeout=10).stderr
        other = "".join(
            f"    {name}_temp_path {self.folder}/{name};\n"
            for name in ("fastcgi", "uwsgi", "scgi")
            if f"--without-http_{name}_module" not in built
        )
        return MAIN_CONF.format(
            # Workers of a master running as root would run as nobody, who cannot write here.
            user="user root;" if os.geteuid() == 0 else "",
            dir=self.folder,
            other_temp_paths=other,
            http=self.http(self.port),
        )

    def start(self, timeout_s: float = 20.0) -> Nginx:
        if not os.path.exists(NGINX):
            raise RuntimeError(
                f"{NGINX} is missing: run scripts/test.sh, which installs Debian's nginx-light"
            )
        self.port = free_port()
        conf = self.folder / "nginx.conf"
        conf.write_text(self.config())
        out = open(self.folder / "nginx.out", "wb")  # noqa: SIM115 - closed in stop()
        self._out = out
        folder = str(self.folder)
        self.proc = subprocess.Popen(
            [NGINX, "-p", folder, "-e", f"{folder}/error.log", "-c", str(conf), "-g", "daemon off;"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"nginx exited with {self.proc and self.proc.returncode}:\n{self.logs()}")
            try:
                if fetch(self.port, self.probe)[0] == 200:
                    log.info("nginx listening on %s", self.url)
                    return self
            except OSError:
                pass
            time.sleep(0.05)  # polling nginx with a deadline
        self.stop()
        raise TimeoutError(f"nginx did not answer within {timeout_s} s:\n{self.logs()}")

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout_s)  # SIGTERM: nginx's fast shutdown, streams included
        if getattr(self, "_out", None):
            self._out.close()

    def logs(self) -> str:
        files = (self.folder / "nginx.out", self.folder / "error.log")
        return "".join(p.read_text(errors="replace") for p in files if p.exists())

    def errors(self) -> list[str]:
        """The lines of its error log at level error or worse."""
        return [line for line in self.logs().splitlines() if re.search(r"\[(error|crit|alert|emerg)\]", line)]


#: The configuration the README gives for nginx in front of the edges.
EDGES_CONF = ROOT / "docs" / "nginx-edges.conf"


def edges_http(port: int, edges: list[int]) -> str:
    """docs/nginx-edges.conf as it is, but listening on 127.0.0.1:``port`` and
    with the edges on these loopback ports in its upstream (for :class:`Nginx`)."""
    text = EDGES_CONF.read_text()
    servers = re.findall(r"^ *server 127\.0\.0\.1:\d+ (.*);$", text, re.MULTILINE)
    assert servers and "listen 80;" in text, "docs/nginx-edges.conf changed its shape"
    options = servers[0]
    upstream = "".join(f"    server 127.0.0.1:{edge} {options};\n" for edge in edges)
    text = re.sub(r"(^ *server 127\.0\.0\.1:\d+ .*;\n)+", upstream, text, count=1, flags=re.MULTILINE)
    return text.replace("listen 80;", f"listen 127.0.0.1:{port};")
