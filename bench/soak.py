"""Soak: thousands of short visits to a server, then its file descriptors, threads and memory.

    .venv/bin/python bench/soak.py [--cycles 5000] [--threads 4]

Starts ``server.py`` with two cameras: ``live`` (the files camera) and
``flaky`` (the mjpeg driver relaying an upstream in this process that drops
its stream every ``--flap-seconds``, so that camera fails and recovers over
and over).  Then ``--threads`` clients make ``--cycles`` visits in all, each
one of: an MJPEG stream read for a frame and closed, or reset (RST) in the
middle of a frame; a WebSocket opened, read for a frame and closed, or
reset; a snapshot.  Before and after, with every camera idled, it reads the
server's open file descriptors, threads and resident memory from ``/proc``,
and finally checks that streaming still works.  Prints one JSON object.
Loopback only; bounded in time; the server is stopped by its PID.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import random
import re
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fanout import make_frames  # noqa: E402
from harness.process import free_port, stop_process  # noqa: E402

log = logging.getLogger("bench.soak")


class FlakyUpstream(socketserver.ThreadingTCPServer):
    """An MJPEG source that ends every stream after ``flap_s`` seconds."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, jpeg: bytes, flap_s: float) -> None:
        self.jpeg = jpeg
        self.flap_s = flap_s
        self.stopping = threading.Event()
        self.connections = 0
        super().__init__(("127.0.0.1", 0), _UpstreamHandler)


class _UpstreamHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: FlakyUpstream = self.server  # type: ignore[assignment]
        sock = self.request
        sock.settimeout(5)
        server.connections += 1
        if server.connections % 3 == 0:
            return  # now and then the source refuses outright: the camera fails
        with contextlib.suppress(OSError):
            sock.recv(65536)
            sock.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=f\r\n\r\n")
            end = time.monotonic() + server.flap_s
            while time.monotonic() < end and not server.stopping.is_set():
                head = b"--f\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(server.jpeg)
                sock.sendall(head + server.jpeg + b"\r\n")
                server.stopping.wait(0.1)  # the source's own frame rate, 10 fps


def proc_figures(pid: int) -> dict:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    fds = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            fds.append(os.readlink(f"/proc/{pid}/fd/{name}"))
    return {
        "fds": len(fds),
        "fd_kinds": sorted({re.sub(r"\[\d+\]", "", f) for f in fds}),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "rss_kb": rss,
    }


def settled_figures(pid: int, timeout_s: float = 10.0) -> dict:
    """``proc_figures`` once the descriptor and thread counts have stayed the same for a
    second (connections still closing are not counted as kept)."""
    deadline = time.monotonic() + timeout_s
    figures = proc_figures(pid)
    same = 0
    while same < 5 and time.monotonic() < deadline:
        time.sleep(0.2)  # sampling /proc with a deadline
        now = proc_figures(pid)
        same = same + 1 if (now["fds"], now["threads"]) == (figures["fds"], figures["threads"]) else 0
        figures = now
    return figures


def status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
        return json.load(response)


def wait_idle(port: int, timeout_s: float = 30.0) -> None:
    """Until no camera runs and nobody watches (the idle timeout has passed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        cams = status(port)["cameras"].values()
        if not any(c["running"] or c["subscribers"] for c in cams):
            return
        time.sleep(0.1)  # polling /status with a deadline
    raise TimeoutError("the cameras did not idle")


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _read_until(sock: socket.socket, marker: bytes, limit: int = 1 << 20) -> bytes:
    data = b""
    while marker not in data and len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def visit(port: int, kind: str, camera: str) -> bool:
    """One visit; True if it saw what it came for."""
    base = f"/cameras/{camera}/"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        if kind.startswith("mjpeg"):
            sock.sendall(f"GET {base}stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            if kind == "mjpeg-reset":
                sock.recv(2000)  # the head and the start of a frame
                _reset(sock)
                return True
            return b"\xff\xd9" in _read_until(sock, b"\xff\xd9")
        if kind.startswith("ws"):
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                f"GET {base}ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            data = _read_until(sock, b"\xff\xd8")
            if kind == "ws-reset":
                _reset(sock)
                return b" 101 " in data
            ok = b" 101 " in data and b"\xff\xd8" in data
            with contextlib.suppress(OSError):
                sock.sendall(b"\x88\x82\x00\x00\x00\x00\x03\xe8")  # close 1000 (zero mask)
            return ok
        sock.sendall(f"GET {base}snapshot.jpg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = _read_until(sock, b"\xff\xd9")
        return data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.1 503")


KINDS = ["mjpeg", "mjpeg-reset", "ws", "ws-reset", "snapshot"]


def run(cycles: int, threads: int, flap_s: float, seconds_limit: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="camstream-soak-") as tmp:
        frames = Path(tmp) / "frames"
        frames.mkdir()
        make_frames(frames, count=4, target_bytes=20_000)
        upstream = FlakyUpstream((frames / "000.jpg").read_bytes(), flap_s)
        threading.Thread(target=upstream.serve_forever, daemon=True).start()
        up_port = upstream.server_address[1]
        port = free_port()
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                [
                    *(sys.executable, str(ROOT / "server.py"), "--port", str(port)),
                    *("--camera", f"live=files:{frames}", "--fps", "15"),
                    *("--camera", f"flaky=mjpeg:http://127.0.0.1:{up_port}/stream.mjpg"),
                    *("--idle-timeout", "1", "--max-clients", "200"),
                ],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    status(port)
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError(log_path.read_text()[-2000:]) from None
                    time.sleep(0.05)  # polling the port with a deadline
            # Warm up (imports, first allocations), then the baseline with the cameras idle.
            for kind in KINDS:
                visit(port, kind, "live")
            wait_idle(port)
            before = settled_figures(proc.pid)
            counts = {kind: 0 for kind in KINDS}
            failures = []
            lock = threading.Lock()
            stop_at = time.monotonic() + seconds_limit

            def client(n: int, seed: int) -> None:
                rng = random.Random(seed)
                for _ in range(n):
                    if time.monotonic() > stop_at:
                        return
                    kind = rng.choice(KINDS)
                    camera = rng.choice(["live", "live", "flaky"])
                    try:
                        ok = visit(port, kind, camera)
                    except OSError as exc:
                        ok = False
                        why = f"{kind} {camera}: {exc}"
                    else:
                        why = f"{kind} {camera}: nothing seen"
                    with lock:
                        counts[kind] += 1
                        if not ok:
                            failures.append(why)

            started = time.monotonic()
            workers = [threading.Thread(target=client, args=(cycles // threads, i)) for i in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            elapsed = time.monotonic() - started
            flaky = status(port)["cameras"]["flaky"]
            wait_idle(port)
            after = settled_figures(proc.pid)
            # Streaming still works.
            still = visit(port, "mjpeg", "live") and visit(port, "ws", "live")
            text = log_path.read_text(errors="replace")
            return {
                "cycles": sum(counts.values()),
                "by_kind": counts,
                "seconds": round(elapsed, 1),
                "failed_visits": len(failures),
                "failure_examples": failures[:5],
                "flaky_camera_starts": flaky["camera_starts"],
                "flaky_upstream_connections": upstream.connections,
                "flaky_failures_logged": text.count("flaky (mjpeg) camera failed"),
                "before": before,
                "after": after,
                "rss_growth_kb": after["rss_kb"] - before["rss_kb"],
                "streaming_after": still,
                "tracebacks_in_log": text.count("Traceback"),
                "errors_in_log": text.count(" ERROR "),
            }
        finally:
            upstream.stopping.set()
            upstream.shutdown()
            upstream.server_close()
            stop_process(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--flap-seconds", type=float, default=2.0, help="the flaky source's stream length")
    parser.add_argument("--seconds-limit", type=float, default=600.0, help="stop visiting after this long")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = run(args.cycles, args.threads, args.flap_seconds, args.seconds_limit)
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
