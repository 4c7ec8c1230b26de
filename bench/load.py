"""Load generator: N concurrent viewers of a running server, over MJPEG or WebSocket.

    .venv/bin/python bench/load.py --url http://127.0.0.1:8080/stream.mjpg --viewers 100 --seconds 10
    .venv/bin/python bench/load.py --url ws://127.0.0.1:8080/ws --viewers 100 --seconds 10
    .venv/bin/python bench/load.py --url ... --viewers 100 --stalled 50   # plus 50 that never read

One process, one epoll loop, raw non-blocking sockets read into one shared
buffer: a viewer costs a few microseconds of Python per frame, so the
generator is not the limit (it reports its own CPU to show it).  Viewers
connect, each waits for its first frame, then every frame arriving during
``--seconds`` is counted per viewer.  Prints one JSON object:

* ``fps_median``, ``fps_p5``, ``fps_min``: frames per second across viewers;
* ``duplicates``: frames whose capture time (MJPEG ``X-Timestamp``, WebSocket
  ``camstream`` JPEG comment) equals the previous frame's on the same viewer;
* ``errors``: viewers that failed to connect, were refused or were closed;
* ``latency_ms``: capture time to the frame's last byte arriving (median, p99);
  both clocks are this machine's, so no offset is involved;
* ``cpu_percent``: this process's own CPU over the measured window;
* with ``--server-pid``, the server's CPU over exactly that window (from
  ``/proc/PID/task/*/schedstat``), per delivered frame, and its resident memory.

With ``--stalled K``, a first window is measured with the readers alone
(``before_stalled``), then K viewers connect that never read a byte, and the
main window is measured with them attached.

Loopback only, bounded in time (connecting, warming up and measuring each
have a deadline), stops by itself.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import resource
import select
import socket
import statistics
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.stats import percentile  # noqa: E402

BUFFER = bytearray(4 << 20)
VIEW = memoryview(BUFFER)
_WS_COMMENT = re.compile(rb"camstream seq=\d+ t=([0-9.]+)")
HEAD_END = b"\r\n\r\n"


@dataclass
class Target:
    host: str
    port: int
    path: str
    ws: bool


def parse_target(url: str) -> Target:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "ws"):
        raise SystemExit(f"load.py: error: {url}: only http:// (MJPEG) and ws:// (WebSocket) URLs")
    host = parts.hostname or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("load.py: error: loopback only")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(host, parts.port or 80, path, parts.scheme == "ws")


class Viewer:
    """One connection and its parser state; counts frames and their latencies."""

    __slots__ = (
        "duplicates",
        "error",
        "fd",
        "first_at",
        "frames",
        "head",
        "last_stamp",
        "latencies",
        "skip",
        "sock",
        "stamp",
        "state",
        "window_frames",
        "ws",
    )

    def __init__(self, sock: socket.socket, ws: bool) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.ws = ws
        self.state = "response"  # response head, then "head" (part/frame head) or "body"
        self.head = bytearray()
        self.skip = 0
        self.stamp = b""
        self.last_stamp = b""
        self.frames = 0
        self.window_frames = 0
        self.duplicates = 0
        self.latencies: list[float] | None = None
        self.error: str | None = None
        self.first_at = 0.0


def request_bytes(target: Target) -> bytes:
    lines = [f"GET {target.path} HTTP/1.1", f"Host: {target.host}:{target.port}"]
    if target.ws:
        key = base64.b64encode(os.urandom(16)).decode()
        lines += [
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            f"Origin: http://{target.host}:{target.port}",
        ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Load:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.epoll = select.epoll()
        self.viewers: dict[int, Viewer] = {}
        self.measuring = False

    def connect(self, count: int, reading: bool = True, timeout_s: float = 30.0) -> list[Viewer]:
        """``count`` viewers; those not ``reading`` never read a byte, and their
        receive buffer is made small so that the server's side fills soon."""
        out = []
        request = request_bytes(self.target)
        deadline = time.monotonic() + timeout_s
        for _ in range(count):
            sock = socket.socket(socket.AF_INET6 if ":" in self.target.host else socket.AF_INET)
            if not reading:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            sock.connect((self.target.host, self.target.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(request)
            sock.setblocking(False)
            viewer = Viewer(sock, self.target.ws)
            if reading:
                self.viewers[viewer.fd] = viewer
                self.epoll.register(viewer.fd, select.EPOLLIN)
            out.append(viewer)
            if time.monotonic() > deadline:
                raise SystemExit("load.py: error: connecting took too long")
            if reading and len(out) % 50 == 0:
                self.run(0.0)  # keep reading while connecting more
        return out

    def run(self, seconds: float) -> None:
        """Read whatever arrives for ``seconds``."""
        poll = self.epoll.poll
        viewers = self.viewers
        end = time.monotonic() + seconds
        while True:
            remaining = end - time.monotonic()
            events = poll(max(0.0, min(remaining, 0.05)), 1024)
            now = time.time()
            for fd, _mask in events:
                viewer = viewers.get(fd)
                if viewer is not None:
                    self._read(viewer, now)
            if remaining <= 0:
                return

    def _fail(self, viewer: Viewer, why: str) -> None:
        if viewer.error is None:
            viewer.error = why
        self.viewers.pop(viewer.fd, None)
        with contextlib.suppress(OSError, ValueError):
            self.epoll.unregister(viewer.fd)
        viewer.sock.close()

    def _read(self, viewer: Viewer, now: float) -> None:
        try:
            n = viewer.sock.recv_into(BUFFER)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(viewer, f"recv: {exc}")
            return
        if n == 0:
            self._fail(viewer, "closed by the server")
            return
        pos = 0
        while pos < n:
            if viewer.skip:
                take = min(viewer.skip, n - pos)
                viewer.skip -= take
                pos += take
                if not viewer.skip and viewer.state == "body":
                    self._frame_done(viewer, now)
                continue
            # Collect a head: the response head, a part head, or a WebSocket frame head.
            take = min(n - pos, 256)
            viewer.head += VIEW[pos : pos + take]
            used = self._parse_head(viewer)
            if used is None:
                pos += take
                if len(viewer.head) > 65536:
                    self._fail(viewer, "head too long")
                    return
            else:
                # ``used`` bytes of head consumed; give back the rest of this chunk.
                pos += take - (len(viewer.head) - used)
                del viewer.head[:]
                if viewer.error:
                    self._fail(viewer, viewer.error)
                    return

    def _parse_head(self, viewer: Viewer) -> int | None:
        """Consume one head from ``viewer.head`` if complete; return its length, else None."""
        head = viewer.head
        if viewer.state == "response":
            end = head.find(HEAD_END)
            if end < 0:
                return None
            status = bytes(head[:12])
            expected = b" 101" if viewer.ws else b" 200"
            if expected not in status:
                viewer.error = f"status {status!r}"
            viewer.state = "head"
            return end + 4
        if viewer.ws:
            return self._ws_head(viewer)
        end = head.find(HEAD_END)
        if end < 0:
            return None
        block = bytes(head[:end])
        at = block.find(b"Content-Length: ")
        if at < 0:
            viewer.error = "a part without Content-Length"
            return end + 4
        length = int(block[at + 16 : block.index(b"\r", at) if b"\r" in block[at:] else None])
        at = block.find(b"X-Timestamp: ")
        viewer.stamp = block[at + 13 :].split(b"\r", 1)[0] if at >= 0 else b""
        viewer.skip = length + 2  # the body and its CRLF
        viewer.state = "body"
        return end + 4

    def _ws_head(self, viewer: Viewer) -> int | None:
        head = viewer.head
        if len(head) < 2:
            return None
        opcode = head[0] & 0x0F
        length = head[1] & 0x7F
        pos = 2
        if length == 126:
            if len(head) < 4:
                return None
            length = int.from_bytes(head[2:4], "big")
            pos = 4
        elif length == 127:
            if len(head) < 10:
                return None
            length = int.from_bytes(head[2:10], "big")
            pos = 10
        if opcode == 2:
            # The capture time is in the JPEG comment near the start of the payload.
            want = min(length, 160)
            if len(head) < pos + want:
                return None
            found = _WS_COMMENT.search(head, pos, pos + want)
            viewer.stamp = found.group(1) if found else b""
            viewer.skip = length - want
            viewer.state = "body"
            if not viewer.skip:
                self._frame_done(viewer, time.time())
            return pos + want
        if len(head) < pos + length:
            return None
        if opcode == 9:  # ping: answer with a masked pong (zero mask) of the same payload
            payload = bytes(head[pos : pos + length])
            with contextlib.suppress(OSError):
                viewer.sock.send(bytes([0x8A, 0x80 | length]) + b"\0\0\0\0" + payload)
        elif opcode == 8:
            viewer.error = "closed by the server (WebSocket close)"
        return pos + length

    def _frame_done(self, viewer: Viewer, now: float) -> None:
        viewer.state = "head"
        viewer.frames += 1
        if viewer.frames == 1:
            viewer.first_at = now
        stamp = viewer.stamp
        if not self.measuring:
            viewer.last_stamp = stamp
            return
        viewer.window_frames += 1
        if stamp and stamp == viewer.last_stamp:
            viewer.duplicates += 1
        viewer.last_stamp = stamp
        if stamp and viewer.latencies is not None:
            viewer.latencies.append(now - float(stamp))


def server_cpu_s(pid: int | None) -> float:
    """CPU time of every thread of ``pid`` so far, in seconds (0 without a pid)."""
    if pid is None:
        return 0.0
    total = 0
    for name in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{name}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total / 1e9


def server_rss_kb(pid: int | None) -> int | None:
    if pid is None:
        return None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def measure(load: Load, viewers: list[Viewer], seconds: float, pid: int | None) -> dict:
    """Count every frame for ``seconds``; the figures of that window."""
    for viewer in viewers:
        viewer.latencies = []
        viewer.window_frames = 0
        viewer.duplicates = 0
    load.measuring = True
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    server0 = server_cpu_s(pid)
    t0 = time.monotonic()
    load.run(seconds)
    elapsed = time.monotonic() - t0
    server1 = server_cpu_s(pid)
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    load.measuring = False
    cpu_s = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    rates = [v.window_frames / elapsed for v in viewers]
    latencies = [x for v in viewers for x in (v.latencies or [])]
    errors = [v.error for v in viewers if v.error]
    frames = sum(v.window_frames for v in viewers)
    report = {
        "seconds": round(elapsed, 3),
        "frames": frames,
        "fps_median": round(statistics.median(rates), 2) if rates else 0.0,
        "fps_p5": round(percentile(rates, 5), 2) if rates else 0.0,
        "fps_min": round(min(rates), 2) if rates else 0.0,
        "duplicates": sum(v.duplicates for v in viewers),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "latency_ms": {
            "median": round(1000 * percentile(latencies, 50), 2) if latencies else float("nan"),
            "p99": round(1000 * percentile(latencies, 99), 2) if latencies else float("nan"),
            "max": round(1000 * max(latencies), 2) if latencies else None,
        },
        "cpu_percent": round(100 * cpu_s / elapsed, 1),
    }
    if pid is not None:
        server_s = server1 - server0
        report["server_cpu_percent"] = round(100 * server_s / elapsed, 2)
        report["server_us_per_frame"] = round(1e6 * server_s / frames, 2) if frames else None
        report["server_rss_kb"] = server_rss_kb(pid)
    return report


def frames_skipped(target: Target) -> int | None:
    """The server's ``frames_skipped`` from ``/status`` (None if it has none)."""
    url = f"http://{target.host}:{target.port}/status"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(json.load(response)["frames_skipped"])
    except (OSError, ValueError, KeyError):
        return None


def warm_up(load: Load, viewers: list[Viewer], seconds: float) -> None:
    """Read until every viewer has its first frame (or ``seconds`` pass), then a little more."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(v.frames == 0 and v.error is None for v in viewers):
        load.run(0.05)
    load.run(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", required=True, help="http://127.0.0.1:PORT/stream.mjpg or ws://127.0.0.1:PORT/ws"
    )
    parser.add_argument("--viewers", type=int, default=10)
    parser.add_argument("--stalled", type=int, default=0, help="extra viewers that connect and never read")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long frames are counted")
    parser.add_argument("--warmup", type=float, default=3.0, help="at most this long for every first frame")
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to this CPU")
    parser.add_argument("--server-pid", type=int, default=None, help="report this process's CPU and memory")
    parser.add_argument(
        "--hold", type=float, default=0.0, help="after measuring, keep the viewers connected this long"
    )
    args = parser.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.viewers + args.stalled + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(want, soft)), hard))
    target = parse_target(args.url)
    pid = args.server_pid
    load = Load(target)
    rss_before = server_rss_kb(pid)
    started = time.monotonic()
    viewers = load.connect(args.viewers)
    connect_s = time.monotonic() - started
    warm_up(load, viewers, args.warmup + 2.0)
    before = None
    stalled: list[Viewer] = []
    if args.stalled:
        before = measure(load, viewers, args.seconds, pid)
        stalled = load.connect(args.stalled, reading=False)
        # Until the server skips them: their socket buffers are full (30 s at most).
        start = frames_skipped(target)
        deadline = time.monotonic() + 30
        while start is not None and time.monotonic() < deadline:
            load.run(0.25)
            now = frames_skipped(target)
            if now is None or now - start >= 10 * args.stalled:
                break
        skipped_before = frames_skipped(target)
    report = {
        "url": args.url,
        "viewers": args.viewers,
        "stalled": args.stalled,
        "connect_s": round(connect_s, 3),
        **measure(load, viewers, args.seconds, pid),
    }
    if pid is not None:
        report["server_rss_kb_before_connecting"] = rss_before
    if before is not None:
        report["before_stalled"] = before
        skipped_after = frames_skipped(target)
        if skipped_before is not None and skipped_after is not None:
            report["server_frames_skipped"] = skipped_after - skipped_before
    if args.hold > 0:
        load.run(args.hold)
    for viewer in viewers + stalled:
        viewer.sock.close()
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
