"""The cluster benchmark: an origin, nats-server, two edges and nginx in front of them, under
viewers; against one plain server with the same viewers.

    .venv/bin/python bench/cluster.py --json docs/cluster.json     # the full run, about 10 minutes
    .venv/bin/python bench/cluster.py --seconds 5 --repeat 1        # a quick look, about 3 minutes
    .venv/bin/python bench/cluster.py --parts edges --modes mjpeg --proxy-buffer-size 4k
    .venv/bin/python bench/cluster.py --from-json docs/cluster.json # only the tables of a past run

Everything on loopback.  The cluster: ``nats-server`` (harness/natsserver.py); the origin,
``server.py --camera emulated --fps 30 --publish nats://127.0.0.1:PORT`` (640x480, quality
80); two edges, ``server.py --camera emulated=nats:nats://127.0.0.1:PORT/emulated
--max-clients 2000``; nginx (harness/nginx.py: one worker) with docs/nginx-edges.conf in
front of both (``least_conn``; ``worker_connections`` raised when 2 x viewers needs more
than its 2048).  The viewers are bench/load.py's (its ``Load``, ``warm_up`` and
``measure``, in this process: the code of ``load.py --server-pid``), through nginx to
``/stream.mjpg`` (MJPEG: nginx sends it to an HTTP/1.1 client chunked, which
:class:`Dechunked` takes off for load.py's parser) or ``/ws?adapt=0`` (WebSocket, full size).

Three parts (``--parts``, all by default), ``--repeat`` times each, interleaved: per run a
fresh cluster and a fresh single server, in turn first (drift of a shared machine then
falls on both):

``edges``
    ``--viewers`` (500) through nginx, in each of ``--modes``: frame rate across viewers
    (median, 5th percentile), duplicates, errors, latency from capture (the origin's
    clock) to the frame's last byte at the viewer; how nginx split them (each edge's
    ``/status`` ``clients``); the CPU of every process over exactly the measured window
    (``/proc/PID/task/*/schedstat``: the origin, each edge, nats-server, nginx's master and
    workers); each edge's CPU per frame it sent (its ``frames_sent`` over the same window);
    the edges' bus latency (``/status`` ``bus.latency_ms``: capture on the origin to arrival
    at the edge, p50 and p99 of its last 1000 frames, so the viewers are held connected
    ``--bus-window`` s, about 34, and the window measured is its last ``--seconds``); and
    the same latency seen by a bare NATS subscriber in a process of its own (``--probe``),
    the bus's share without an edge's work.
``origin``
    The same at ``--counts`` (2, one per edge, and 100) MJPEG viewers: the origin's CPU per
    second against the number of viewers of its edges (with the edges part's, at
    ``--viewers``), and the bus latency at almost no load.
``single``
    One plain ``server.py --camera emulated --fps 30`` (no bus), ``--viewers``/2 (what one
    edge serves) and ``--viewers`` viewers directly, each mode: its CPU per frame sent (as
    for an edge; and per frame its viewers counted, what ``load.py --server-pid`` reports),
    and the latency without the bus and nginx.

Processes are not pinned by default (``--pin``: nginx on CPU 1 and every other process of
the cluster, the viewers too, on CPU 0; the single server on CPU 0 and its viewers on 1).
Experiments beside docs/nginx-edges.conf: ``--proxy-buffer-size SIZE`` (in place of its 64k),
``--nginx-workers N``.
Prints Markdown tables (medians over the runs, then every window) and the goals; ``--json
FILE`` writes every figure.  Bounded in time (every wait has a deadline, and the whole run
``--time-limit``); every process it starts is ended by its PID, also on Ctrl-C, SIGTERM, an
error or the time limit.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import logging
import os
import platform
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fanout import machine as fanout_machine  # noqa: E402
from bench.load import Load, Viewer, measure, parse_target, server_cpu_s, warm_up  # noqa: E402
from cameras.nats import LATENCY_FRAMES  # noqa: E402
from harness.natsserver import NATS_SERVER, NatsServer  # noqa: E402
from harness.nginx import NGINX, Nginx, edges_http  # noqa: E402
from harness.process import ServerProcess, pin  # noqa: E402
from harness.stats import percentile  # noqa: E402

log = logging.getLogger("bench.cluster")

SERVER_CPU = 0
OTHER_CPU = 1
FPS = 30
TICKS = os.sysconf("SC_CLK_TCK")


class TimeLimit(Exception):
    """The run took longer than ``--time-limit``."""


# -- processes ----------------------------------------------------------------------------
def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (nginx's workers)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(x) for x in f.read().split()]
    return found


class NginxFor(Nginx):
    """harness/nginx.py's Nginx, with ``worker_connections`` raised to ``connections`` when
    its 2048 are too few (two per viewer: the viewer's and the edge's)."""

    def __init__(
        self, folder: Path, edges: list[int], connections: int, buffer: str | None = None, workers: int = 1
    ) -> None:
        super().__init__(folder, lambda port: edges_http(port, edges), "/status")
        self.connections = connections
        self.buffer = buffer
        self.workers = workers

    def config(self) -> str:
        text = super().config()
        if self.connections > 2048:
            text = text.replace("worker_connections 2048;", f"worker_connections {self.connections};")
        if self.workers != 1:  # an experiment: harness/nginx.py runs one worker
            text = text.replace("worker_processes 1;", f"worker_processes {self.workers};")
        if self.buffer:  # an experiment (--proxy-buffer-size): in place of the shipped size
            # nginx refuses a directive twice in one block: the shipped lines are replaced, or
            # added when the configuration has none.  proxy_buffers only for nginx's check
            # (busy buffers < all of them but one); unused while buffering is off.
            lines = {"proxy_buffer_size": f"proxy_buffer_size {self.buffer};"}
            lines["proxy_buffers"] = f"proxy_buffers 4 {self.buffer};"
            for name, line in lines.items():
                text, found = re.subn(rf"^( *){name} [^;]*;$", rf"\g<1>{line}", text, flags=re.MULTILINE)
                if not found:
                    text = text.replace("proxy_buffering off;", f"proxy_buffering off;\n        {line}")
                assert text.count(f"{name} ") == 1 and line in text, "docs/nginx-edges.conf changed its shape"
        return text

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)] if self.proc else []


def status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as reply:
        return json.load(reply)


def wait_for(predicate: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:g} s")
        time.sleep(0.1)  # polling with a deadline


class Cluster:
    """nats-server, the origin, two edges and nginx in front; every one stopped by its PID
    in :meth:`stop` (also when :meth:`start` fails halfway)."""

    def __init__(self, logs: Path, args: argparse.Namespace) -> None:
        self.logs = Path(tempfile.mkdtemp(prefix="cluster-", dir=logs))
        self.viewers = args.viewers
        self.pinned = args.pin
        self.buffer = args.proxy_buffer_size
        self.workers = args.nginx_workers
        self.nats: NatsServer | None = None
        self.origin: ServerProcess | None = None
        self.edges: list[ServerProcess] = []
        self.nginx: NginxFor | None = None

    def start(self) -> Cluster:
        nats_dir = self.logs / "nats"
        nats_dir.mkdir()
        # Each process is kept before it is started: stop() ends it even if start() fails.
        self.nats = NatsServer(nats_dir)
        self.nats.start()
        url = self.nats.url
        self.origin = server(
            self.logs / "origin", ["--camera", "emulated", "--fps", str(FPS), "--publish", url]
        )
        self.origin.start()
        for i in range(2):
            edge = server(self.logs / f"edge{i + 1}", ["--camera", f"emulated=nats:{url}/emulated"])
            self.edges.append(edge)
            edge.start()
        nginx_dir = self.logs / "nginx"
        nginx_dir.mkdir()
        connections = max(2048, 2 * self.viewers + 256)
        self.nginx = NginxFor(nginx_dir, [e.port for e in self.edges], connections, self.buffer, self.workers)
        self.nginx.start()
        if self.pinned:
            for pid in (self.origin.proc.pid, *(e.proc.pid for e in self.edges), self.nats.proc.pid):
                pin(pid, SERVER_CPU)
            for pid in self.nginx.pids:
                pin(pid, OTHER_CPU)
        return self

    def stop(self) -> None:
        """Every process, each by its PID; one that fails to stop (or a Ctrl-C meanwhile)
        does not keep the others running."""
        pending: BaseException | None = None
        for stop in (
            self.nginx and self.nginx.stop,
            *(e.stop for e in self.edges),
            self.origin and self.origin.stop,
            self.nats and self.nats.stop,
        ):
            if stop:
                try:
                    stop()
                except BaseException as exc:  # the others are still stopped, then it is raised
                    log.warning("stopping a process of the cluster: %r", exc)
                    pending = pending or exc
        if pending is not None:
            raise pending

    def pids(self) -> dict[str, list[int]]:
        assert self.nats and self.nats.proc and self.origin and self.origin.proc and self.nginx
        out = {"origin": [self.origin.proc.pid], "nats": [self.nats.proc.pid], "nginx": self.nginx.pids}
        for i, edge in enumerate(self.edges):
            assert edge.proc
            out[f"edge{i + 1}"] = [edge.proc.pid]
        return out


def server(folder: Path, args: list[str]) -> ServerProcess:
    """``server.py ARGS`` on a free loopback port, to start (INFO: the start-up line names the
    port); its ``stop`` ends it by its PID, started or not."""
    folder.mkdir()
    return ServerProcess([*args, "--max-clients", "2000"], folder / "server")


def cpu_of(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each named group of processes (every thread)."""
    return {name: sum(server_cpu_s(pid) for pid in group) for name, group in pids.items()}


def machine_busy_s() -> tuple[float, float]:
    """CPU seconds all CPUs of the machine have been busy so far, and of that in interrupts
    (``/proc/stat``: irq and softirq, loopback's TCP among them).  Less our processes, what
    else ran (the bare subscriber, and anyone else's work on a shared machine): see
    :func:`others_percent`."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / TICKS, (fields[5] + fields[6]) / TICKS


def irq_time_accounting() -> bool | None:
    """Whether this kernel keeps interrupt time apart from the processes' (``CONFIG_IRQ_TIME_
    ACCOUNTING``); without it, an interrupt's time is charged to the process it interrupted,
    so it is inside our processes' CPU too.  None when the kernel's configuration is not
    readable."""
    for path in (f"/boot/config-{platform.release()}", "/proc/config.gz"):
        try:
            with gzip.open(path, "rt") if path.endswith(".gz") else open(path) as f:
                return "CONFIG_IRQ_TIME_ACCOUNTING=y" in f.read()
        except OSError:
            continue
    return None


def others_percent(r: dict[str, Any], results: dict[str, Any]) -> float | None:
    """The machine's busy time in a window less that of all our processes (and less the
    interrupts, when the kernel keeps those apart from the processes')."""
    busy = r.get("machine_busy_percent")
    if busy is None:
        return None
    ours = sum(r["cpu_percent_of"].values()) + r["cpu_percent"]
    apart = results.get("machine", {}).get("irq_time_accounting") is True
    return round(max(0.0, busy - ours - (r["interrupts_percent"] if apart else 0.0)), 1)


# -- the bus alone ------------------------------------------------------------------------------
def probe_main(url: str, seconds: float) -> int:
    """``--probe URL SECONDS`` (this file in a process of its own): subscribe to the origin's
    frames for SECONDS with nothing else to do, and print capture-to-arrival p50 and p99 (ms)
    as JSON: the bus's share of an edge's bus latency, without the edge's own work."""
    import asyncio

    import nats

    async def run() -> list[float]:
        latencies: list[float] = []

        async def message(msg: Any) -> None:
            stamp = (msg.headers or {}).get("Camstream-Time")
            if stamp and (msg.headers or {}).get("Camstream-Live", "1") != "0":
                latencies.append(time.time() - float(stamp))

        nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
        await nc.subscribe("camstream.emulated.frames", cb=message)
        await asyncio.sleep(seconds)
        await nc.close()
        return latencies

    samples = asyncio.run(run())

    def at(q: float) -> float | None:
        return round(1000 * percentile(samples, q), 2) if samples else None

    json.dump({"p50": at(50), "p99": at(99), "frames": len(samples)}, sys.stdout)
    return 0


class Probe:
    """``--probe`` in a process of its own, for one window; ended by its PID."""

    def __init__(self, url: str, seconds: float) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", url, f"{seconds:g}"]
        self.seconds = seconds
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def result(self) -> dict[str, Any] | None:
        try:
            out, _ = self.proc.communicate(timeout=self.seconds + 20)
            return json.loads(out) if out.strip() else None
        except (subprocess.TimeoutExpired, ValueError):
            return None
        finally:
            self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# -- viewers through nginx ---------------------------------------------------------------------
class Dechunked:
    """A viewer's socket with the chunked transfer coding taken off its response: nginx
    sends a response of unknown length (the MJPEG stream) to an HTTP/1.1 client chunked, in
    pieces of its ``proxy_buffer_size``, as a browser gets it; bench/load.py's parser reads
    the server's bytes.  Passes a response that is not chunked (a WebSocket's) through."""

    __slots__ = ("head", "left", "line", "raw", "sock", "state")
    RAW = 256 * 1024

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.raw = memoryview(bytearray(self.RAW))
        self.state = "head"  # head, size (a chunk's size line), data, plain, done
        self.head = bytearray()
        self.line = bytearray()
        self.left = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes) -> int:
        return self.sock.send(data)

    def close(self) -> None:
        self.sock.close()

    def recv_into(self, buffer: bytearray) -> int:
        """As ``socket.recv_into``: the decoded bytes; BlockingIOError when none is there
        yet (a read of chunk framing alone is followed by another)."""
        out = memoryview(buffer)
        while True:
            got = self.sock.recv_into(self.raw)
            if got == 0:
                return 0
            n = self._decode(self.raw[:got], out)
            if n:
                return n

    def _decode(self, data: memoryview, out: memoryview) -> int:
        pos, n, end = 0, 0, len(data)
        while pos < end:
            state = self.state
            if state == "data":
                take = min(self.left, end - pos)
                out[n : n + take] = data[pos : pos + take]
                n += take
                pos += take
                self.left -= take
                if not self.left:
                    self.state = "size"
            elif state == "size":  # [CRLF] HEX [;ext] CRLF
                add = min(end, pos + 64) - pos
                line = self.line
                line += data[pos : pos + add]
                while line[:2] == b"\r\n":
                    del line[:2]
                at = line.find(b"\r\n")
                if at < 0:
                    if len(line) > 256:
                        raise OSError("a chunk size line too long")
                    pos += add
                    continue
                size = int(bytes(line[:at]).split(b";")[0], 16)
                pos += add - (len(line) - at - 2)
                del line[:]
                self.left = size
                self.state = "data" if size else "done"
            elif state == "plain":
                take = end - pos
                out[n : n + take] = data[pos:end]
                return n + take
            elif state == "head":
                add = end - pos
                self.head += data[pos:end]
                at = self.head.find(b"\r\n\r\n")
                if at < 0:
                    if len(self.head) > 65536:
                        raise OSError("a response head too long")
                    pos += add
                    continue
                head = bytes(self.head[: at + 4])
                out[n : n + len(head)] = head
                n += len(head)
                pos += add - (len(self.head) - at - 4)
                chunked = b"transfer-encoding: chunked" in head.lower()
                self.state = "size" if chunked else "plain"
                del self.head[:]
            else:  # done: the last chunk came; the rest is ignored
                return n
        return n


class ProxiedLoad(Load):
    """bench/load.py's viewers, each reading through :class:`Dechunked`."""

    def _read(self, viewer: Viewer, now: float) -> None:
        if not isinstance(viewer.sock, Dechunked):
            viewer.sock = Dechunked(viewer.sock)  # type: ignore[assignment]
        super()._read(viewer, now)


# -- one window of viewers -------------------------------------------------------------------
def window(
    url: str,
    viewers: int,
    seconds: float,
    pids: dict[str, list[int]],
    servers: dict[str, int],
    hold_until_s: float = 0.0,
    proxied: bool = False,
    bus: str | None = None,
) -> dict[str, Any]:
    """``viewers`` of ``url`` (bench/load.py's viewers, in this process; ``proxied``: through
    nginx, :class:`ProxiedLoad`): connect, wait for every first frame, keep them
    ``hold_until_s`` from the last connection in all (the bus latency's frames), the last
    ``seconds`` of it measured.  The CPU of every process of ``pids`` over exactly that
    window; for each of ``servers`` (a name of ``pids``: its port), its clients (nginx's split),
    the frames it sent in the window (``/status`` ``frames_sent`` just before and after: its CPU
    per frame is over those) and its bus latency at the end; with ``bus`` (the NATS URL), a
    :class:`Probe` over the window."""
    load = (ProxiedLoad if proxied else Load)(parse_target(url))
    ports = list(servers.values())
    connected: list[Viewer] = []
    probe: Probe | None = None
    try:
        try:
            connected = load.connect(viewers)
        except SystemExit as exc:  # load.py's way to say connecting took too long
            raise RuntimeError(str(exc)) from None
        since = time.monotonic()
        warm_up(load, connected, 5.0)
        split = [len(status(port)["clients"]) for port in ports]
        load.run(max(1.0, hold_until_s - seconds - (time.monotonic() - since)))
        sent0 = [status(port)["frames_sent"] for port in ports]
        if bus:
            probe = Probe(bus, seconds)
        cpu0 = cpu_of(pids)
        busy0 = machine_busy_s()
        t0 = time.monotonic()
        report = measure(load, connected, seconds, None)
        elapsed = time.monotonic() - t0
        busy1 = machine_busy_s()
        cpu1 = cpu_of(pids)
        after = [status(port) for port in ports]
        report_probe = probe.result() if probe else None
    finally:
        if probe is not None:
            probe.stop()
        for viewer in connected:
            viewer.sock.close()
        load.epoll.close()
    report["viewers"] = viewers
    if bus:
        report["bus_alone_ms"] = report_probe
    report["cpu_percent_of"] = {name: round(100 * (cpu1[name] - cpu0[name]) / elapsed, 2) for name in pids}
    busy = 100 * (busy1[0] - busy0[0]) / elapsed
    interrupts = 100 * (busy1[1] - busy0[1]) / elapsed
    report["machine_busy_percent"] = round(busy, 1)
    report["interrupts_percent"] = round(interrupts, 1)
    report["us_per_frame_of"] = {
        name: round(1e6 * (cpu1[name] - cpu0[name]) / report["frames"], 2) if report["frames"] else None
        for name in pids
    }
    report["servers"] = []
    for i, ((name, port), body) in enumerate(zip(servers.items(), after, strict=True)):
        sent = body["frames_sent"] - sent0[i]
        cpu_s = cpu1[name] - cpu0[name]
        bus_status = body.get("bus") or {}
        report["servers"].append(
            {
                "name": name,
                "port": port,
                "clients": split[i],
                "frames_sent": sent,
                "cpu_percent": round(100 * cpu_s / elapsed, 2),
                "us_per_frame": round(1e6 * cpu_s / sent, 2) if sent else None,
                "bus_latency_ms": bus_status.get("latency_ms"),
                "bus_frames_received": bus_status.get("frames_received"),
                "bus_frames_dropped": bus_status.get("frames_dropped"),
            }
        )
    if "server" in pids:
        cpu_s = cpu1["server"] - cpu0["server"]
        report["server_cpu_percent"] = round(100 * cpu_s / elapsed, 2)
        report["server_us_per_frame"] = round(1e6 * cpu_s / report["frames"], 2) if report["frames"] else None
    return report


def wait_idle(ports: list[int]) -> None:
    """Until every server of ``ports`` has seen its viewers go (10 s at most)."""
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: all(not status(p)["clients"] for p in ports), "viewers gone", 10.0)


def url_of(port: int, mode: str) -> str:
    return f"ws://127.0.0.1:{port}/ws?adapt=0" if mode == "ws" else f"http://127.0.0.1:{port}/stream.mjpg"


def edges_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in report.get("servers", []) if e["name"].startswith("edge")]


def summary(report: dict[str, Any]) -> str:
    edges = "; ".join(
        f"edge {e['clients']} viewers {e['us_per_frame']} us/frame, bus p99 "
        f"{(e['bus_latency_ms'] or {}).get('p99')} ms"
        for e in edges_of(report)
    )
    return (
        f"{report['viewers']} viewers: p5 {report['fps_p5']} fps, {report['duplicates']} dup, "
        f"{report['errors']} err, latency p99 {report['latency_ms']['p99']} ms; CPU % "
        f"{report['cpu_percent_of']}" + (f"; {edges}" if edges else "")
    )


# -- the parts -----------------------------------------------------------------------------------
def cluster_run(args: argparse.Namespace, logs: Path, run: int, out: list[dict[str, Any]]) -> None:
    """One fresh cluster: the ``origin`` part's counts, then the ``edges`` part's viewers."""
    windows: list[tuple[str, int, str]] = []
    if "origin" in args.parts:
        windows += [("origin", n, "mjpeg") for n in args.counts]
    if "edges" in args.parts:
        windows += [("edges", args.viewers, mode) for mode in args.modes]
    if args.pin:
        pin(os.getpid(), SERVER_CPU)  # the viewers, and what starts from here, beside the servers
    cluster = Cluster(logs, args)
    try:
        cluster.start()
        assert cluster.nginx
        edges = {f"edge{i + 1}": e.port for i, e in enumerate(cluster.edges)}
        pids = cluster.pids()
        # The camera on: one viewer per edge until both have frames from the origin.
        window(url_of(cluster.nginx.port, "mjpeg"), 2, 1.0, pids, edges, proxied=True)
        for part, viewers, mode in windows:
            wait_idle(list(edges.values()))
            report = window(
                url_of(cluster.nginx.port, mode),
                viewers,
                args.seconds,
                pids,
                edges,
                hold_until_s=args.bus_window,
                proxied=True,
                bus=cluster.nats.url if cluster.nats and args.probe_bus else None,
            )
            out.append({"part": part, "run": run, "mode": mode, **report})
            log.info("run %d, cluster, %s: %s", run + 1, mode, summary(report))
        nginx_errors = cluster.nginx.errors() if cluster.nginx else []
        if nginx_errors:
            log.warning("nginx logged errors: %s", nginx_errors[:3])
            out[-1]["nginx_errors"] = nginx_errors[:10]
    finally:
        cluster.stop()


def single_run(args: argparse.Namespace, logs: Path, run: int, out: list[dict[str, Any]]) -> None:
    """One fresh plain server: ``--viewers``/2 and ``--viewers`` viewers directly, each mode."""
    if args.pin:
        pin(os.getpid(), OTHER_CPU)
    folder = Path(tempfile.mkdtemp(prefix="single-", dir=logs))
    proc = server(folder / "server", ["--camera", "emulated", "--fps", str(FPS)])
    try:
        proc.start()
        assert proc.proc
        if args.pin:
            pin(proc.proc.pid, SERVER_CPU)
        pids = {"server": [proc.proc.pid]}
        window(url_of(proc.port, "mjpeg"), 1, 1.0, pids, {})
        for viewers in sorted({args.viewers // 2, args.viewers}):
            for mode in args.modes:
                wait_idle([proc.port])
                report = window(
                    url_of(proc.port, mode),
                    viewers,
                    args.seconds,
                    pids,
                    {"server": proc.port},
                    args.settle + args.seconds,
                )
                out.append({"part": "single", "run": run, "mode": mode, **report})
                log.info("run %d, single, %s: %s", run + 1, mode, summary(report))
    finally:
        proc.stop()


# -- the tables -------------------------------------------------------------------------------------
def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def listed(values: list[float | None], digits: int = 1) -> str:
    return ", ".join(fmt(v, digits) for v in values)


def runs_of(results: dict[str, Any], part: str, mode: str, viewers: int | None = None) -> list[dict]:
    return [
        r
        for r in results["windows"]
        if r["part"] == part and r["mode"] == mode and (viewers is None or r["viewers"] == viewers)
    ]


def edge_us(r: dict[str, Any]) -> float | None:
    """The edges' CPU per frame they delivered, both together (their CPU over their frames)."""
    edges = edges_of(r)
    frames = sum(e["frames_sent"] for e in edges)
    cpu = sum(e["cpu_percent"] for e in edges) / 100 * r["seconds"]
    return round(1e6 * cpu / frames, 2) if frames else None


def single_us(r: dict[str, Any] | None) -> float | None:
    """The single server's CPU per frame it sent (``frames_sent``, as for the edges)."""
    return r["servers"][0]["us_per_frame"] if r and r.get("servers") else None


def bus_p(r: dict[str, Any], key: str) -> float | None:
    """The worst edge's bus latency ``key`` (p50 or p99) of a window, of the edges with viewers."""
    values = [(e["bus_latency_ms"] or {}).get(key) for e in edges_of(r) if e["clients"]]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def setup_line(args: dict[str, Any]) -> str:
    nginx = "docs/nginx-edges.conf as it is"
    if args.get("proxy_buffer_size"):
        size = args["proxy_buffer_size"]
        nginx = f"docs/nginx-edges.conf with proxy_buffer_size {size} and proxy_buffers 4 {size}"
    workers = args.get("nginx_workers", 1)
    pinned = (
        "nginx on CPU 1, the other processes of the cluster and the viewers on CPU 0; the single "
        "server on CPU 0, its viewers on CPU 1"
        if args.get("pin")
        else "no process pinned"
    )
    return (
        f"nginx: {nginx}, {workers} worker process{'es' if workers != 1 else ''}; {pinned}; "
        f"{args['seconds']:g} s measured per window."
    )


def tables(results: dict[str, Any]) -> str:
    args = results["args"]
    viewers, modes, repeat = args["viewers"], args["modes"], args["repeat"]
    half = viewers // 2
    goals: list[str] = []

    def goal(what: str, figure: str, target: str, ok: bool | None) -> None:
        verdict = "" if ok is None else ("met" if ok else "**missed**")
        goals.append(f"| {what} | {figure} | {target} | {verdict} |")

    def ratios(mode: str) -> list[float | None]:
        single = {r["run"]: r for r in runs_of(results, "single", mode, half)}
        out = []
        for r in runs_of(results, "edges", mode, viewers):
            us, ref = edge_us(r), single_us(single.get(r["run"]))
            out.append(round(us / ref, 2) if us and ref else None)
        return out

    cluster_rows = [(m, runs_of(results, "edges", m, viewers)) for m in modes]
    cluster_rows = [(m, runs) for m, runs in cluster_rows if runs]
    for mode, runs in cluster_rows:
        p5 = [r["fps_p5"] for r in runs]
        dup = sum(r["duplicates"] for r in runs)
        err = sum(r["errors"] for r in runs)
        p5_median = median(p5) or 0.0
        goal(
            f"{viewers} {mode} viewers through nginx: fps p5 (runs); duplicates; errors",
            f"{fmt(p5_median)} ({listed(p5)}); {dup}; {err}",
            ">= 29; 0; 0",
            p5_median >= 29 and dup == 0 and err == 0,
        )
        found = ratios(mode)
        if any(found):
            goal(
                f"{mode}: an edge's CPU per viewer-frame / a single server's, {half} viewers each (runs)",
                f"{fmt(median(found), 2)} ({listed(found, 2)})",
                "<= 1.2",
                (median(found) or 0) <= 1.2,
            )
    origin = []
    for part, n, mode in [("origin", n, "mjpeg") for n in args["counts"]] + [
        ("edges", viewers, m) for m in modes
    ]:
        runs = runs_of(results, part, mode, n)
        if runs:
            origin.append((n, mode, runs))
    if origin:
        values = [median([r["cpu_percent_of"]["origin"] for r in runs]) for _, _, runs in origin]
        figure = "; ".join(f"{n} {m}: {fmt(v, 2)}" for (n, m, _), v in zip(origin, values, strict=True))
        present = [v for v in values if v is not None]
        flat = bool(present) and max(present) - min(present) <= max(0.5, 0.15 * min(present))
        goal("origin CPU, % of a core, by its edges' viewers (medians)", figure, "flat", flat)
    for n, mode, runs in origin:
        p99 = [bus_p(r, "p99") for r in runs]
        if any(v is not None for v in p99):
            goal(
                f"bus latency p99 (the worse edge), {n} {mode} viewers, ms (runs)",
                f"{fmt(median(p99), 2)} ({listed(p99, 2)})",
                "<= 5",
                (median(p99) or 0) <= 5,
            )
    lines = [setup_line(args), "", "## Goals", "", "| | measured | goal | |", "|---|---|---|---|", *goals, ""]

    lines += [
        f"## 1. {viewers} viewers through nginx and two edges (medians of {repeat} runs)",
        "",
        "| mode | fps median | fps p5 | fps min | dup | err | split (edge1/edge2) | latency p50 ms "
        "| p99 ms | nginx CPU % | edges CPU % | origin CPU % | nats CPU % | viewers' CPU % "
        "| interrupts CPU % | others' CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, runs in cluster_rows:
        c = {k: median([r["cpu_percent_of"][k] for r in runs]) for k in runs[0]["cpu_percent_of"]}
        splits = ", ".join("/".join(str(e["clients"]) for e in edges_of(r)) for r in runs)
        lines.append(
            f"| {mode} | {fmt(median([r['fps_median'] for r in runs]))} "
            f"| {fmt(median([r['fps_p5'] for r in runs]))} | {fmt(median([r['fps_min'] for r in runs]))} "
            f"| {sum(r['duplicates'] for r in runs)} | {sum(r['errors'] for r in runs)} | {splits} "
            f"| {fmt(median([r['latency_ms']['median'] for r in runs]))} "
            f"| {fmt(median([r['latency_ms']['p99'] for r in runs]))} | {fmt(c.get('nginx'))} "
            f"| {fmt(c.get('edge1'))} + {fmt(c.get('edge2'))} | {fmt(c.get('origin'))} "
            f"| {fmt(c.get('nats'))} | {fmt(median([r['cpu_percent'] for r in runs]))} "
            f"| {fmt(median([r.get('interrupts_percent') for r in runs]))} "
            f"| {fmt(median([others_percent(r, results) for r in runs]))} |"
        )
    lines.append("")

    lines += [
        f"## 2. CPU per viewer-frame: an edge against a single server, {half} viewers each",
        "",
        "us of CPU per frame sent to a viewer (each server's `frames_sent` over the window); each "
        "run's edges against the single server of the same run. `load.py` us: the single server's "
        "CPU over the frames its viewers counted, as `bench/load.py --server-pid` gives it.",
        "",
        "| mode | run | edge1 us | edge2 us | edges together | single server us | ratio "
        f"| single, load.py us | single at {viewers} viewers us | nginx us per viewer-frame |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, runs in cluster_rows:
        single = {r["run"]: r for r in runs_of(results, "single", mode, half)}
        full = {r["run"]: r for r in runs_of(results, "single", mode, viewers)}
        for r, ratio in zip(runs, ratios(mode), strict=True):
            s = single.get(r["run"])
            edges = edges_of(r)
            lines.append(
                f"| {mode} | {r['run'] + 1} | {fmt(edges[0]['us_per_frame'])} "
                f"| {fmt(edges[1]['us_per_frame'])} | {fmt(edge_us(r))} | {fmt(single_us(s))} "
                f"| {fmt(ratio, 2)} | {fmt(s and s['server_us_per_frame'])} "
                f"| {fmt(single_us(full.get(r['run'])))} | {fmt(r['us_per_frame_of'].get('nginx'))} |"
            )
    lines.append("")

    lines += [
        "## 3, 4. The origin's CPU and the bus latency against the edges' viewers "
        f"(medians of {repeat} runs)",
        "",
        "| viewers | mode | origin CPU % | bus p50 ms | bus p99 ms (the worse edge) "
        "| bare subscriber p50 ms | p99 ms | viewer latency p50 ms | p99 ms | fps p5 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, mode, runs in origin:
        lines.append(
            f"| {n} | {mode} | {fmt(median([r['cpu_percent_of']['origin'] for r in runs]), 2)} "
            f"| {fmt(median([bus_p(r, 'p50') for r in runs]), 2)} "
            f"| {fmt(median([bus_p(r, 'p99') for r in runs]), 2)} "
            f"| {fmt(median([(r.get('bus_alone_ms') or {}).get('p50') for r in runs]), 2)} "
            f"| {fmt(median([(r.get('bus_alone_ms') or {}).get('p99') for r in runs]), 2)} "
            f"| {fmt(median([r['latency_ms']['median'] for r in runs]))} "
            f"| {fmt(median([r['latency_ms']['p99'] for r in runs]))} "
            f"| {fmt(median([r['fps_p5'] for r in runs]))} |"
        )
    lines.append("")

    singles = [r for r in results["windows"] if r["part"] == "single"]
    if singles:
        lines += [
            f"## Viewer latency: through nginx and the edges, or directly (medians of {repeat} runs)",
            "",
            "| path | viewers | mode | latency p50 ms | p99 ms | fps p5 | server CPU % |",
            "|---|---|---|---|---|---|---|",
        ]
        for mode, runs in cluster_rows:
            lines.append(
                f"| nginx + edges | {viewers} | {mode} "
                f"| {fmt(median([r['latency_ms']['median'] for r in runs]))} "
                f"| {fmt(median([r['latency_ms']['p99'] for r in runs]))} "
                f"| {fmt(median([r['fps_p5'] for r in runs]))} | |"
            )
        for n in sorted({r["viewers"] for r in singles}):
            for mode in modes:
                runs = runs_of(results, "single", mode, n)
                if runs:
                    lines.append(
                        f"| single server | {n} | {mode} "
                        f"| {fmt(median([r['latency_ms']['median'] for r in runs]))} "
                        f"| {fmt(median([r['latency_ms']['p99'] for r in runs]))} "
                        f"| {fmt(median([r['fps_p5'] for r in runs]))} "
                        f"| {fmt(median([r['server_cpu_percent'] for r in runs]))} |"
                    )
        lines.append("")

    names = ("origin", "edge1", "edge2", "nats", "nginx", "server")
    lines += [
        "## Every window",
        "",
        "Frames: counted by the viewers / sent by the servers (`frames_sent`) in the window. CPU: % of "
        "a core; viewers: this process (bench/load.py's viewers); irq: the machine's interrupt "
        "time (`/proc/stat` irq and softirq: loopback's TCP; without CONFIG_IRQ_TIME_ACCOUNTING "
        "also inside the CPU of the processes it interrupted); others: the machine's busy time "
        "less all of ours. Servers: clients, us per frame sent, bus latency p50/p99 ms, frames "
        "the bus dropped.",
        "",
        "| part | run | mode | viewers | fps p5 | dup | err | latency p50 / p99 / max ms | frames "
        "| CPU %: " + " / ".join((*names, "viewers", "irq", "others")) + " | servers |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["windows"]:
        c = r["cpu_percent_of"]
        servers = "; ".join(
            f"{e['name']} {e['clients']}, {fmt(e['us_per_frame'])}"
            + (
                f", {e['bus_latency_ms']['p50']}/{e['bus_latency_ms']['p99']}, {e['bus_frames_dropped']}"
                if e.get("bus_latency_ms")
                else ""
            )
            for e in r.get("servers", [])
        )
        lat = r["latency_ms"]
        lines.append(
            f"| {r['part']} | {r['run'] + 1} | {r['mode']} | {r['viewers']} | {fmt(r['fps_p5'])} "
            f"| {r['duplicates']} | {r['errors']} | {fmt(lat['median'])} / {fmt(lat['p99'])} / "
            f"{fmt(lat['max'])} | {r['frames']} / {sum(e['frames_sent'] for e in r.get('servers', []))} "
            f"| {' / '.join(fmt(c.get(k)) for k in names)} / {fmt(r['cpu_percent'])} / "
            f"{fmt(r.get('interrupts_percent'))} / {fmt(others_percent(r, results))} | {servers} |"
        )
    if results.get("error"):
        lines += ["", f"The run ended early: {results['error']}"]
    return "\n".join(lines)


# -- the run --------------------------------------------------------------------------------------------
def version(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({exc})"
    return (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr).strip() else ""


def machine() -> dict[str, Any]:
    """bench/fanout.py's description of the machine, with the bus's and nginx's versions."""
    import importlib.metadata

    return {
        **fanout_machine(),
        "nproc": version(["nproc"]),
        "nats-py": importlib.metadata.version("nats-py"),
        "nats-server": version([NATS_SERVER, "--version"]),
        "nginx": version([NGINX, "-v"]),
        "irq_time_accounting": irq_time_accounting(),
    }


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def out_of_time(signum: int, frame: object) -> None:
    raise TimeLimit("the run took longer than --time-limit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="edges,origin,single", help="edges, origin, single")
    parser.add_argument("--viewers", type=int, default=500, help="viewers through nginx (default 500)")
    parser.add_argument("--counts", default="2,100", help="origin: fewer viewers through nginx")
    parser.add_argument("--modes", default="mjpeg,ws", help="mjpeg and/or ws")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per window")
    parser.add_argument("--repeat", type=int, default=3, help="runs of everything")
    parser.add_argument(
        "--bus-window",
        type=float,
        default=LATENCY_FRAMES / FPS + 1.0,
        help="cluster: seconds viewers are held, the measured window at its end, so that the edges' "
        "bus latency (their last 1000 frames) is all under that load (default %(default).1f)",
    )
    parser.add_argument("--settle", type=float, default=3.0, help="single: seconds before measuring")
    parser.add_argument(
        "--proxy-buffer-size",
        metavar="SIZE",
        help="an experiment: nginx's proxy_buffer_size (e.g. 4k, and proxy_buffers 4 SIZE) in place of "
        "docs/nginx-edges.conf's",
    )
    parser.add_argument(
        "--nginx-workers", type=int, default=1, help="an experiment: nginx's worker_processes (default 1)"
    )
    parser.add_argument(
        "--no-probe",
        dest="probe_bus",
        action="store_false",
        help="cluster: no bare NATS subscriber beside the edges (the bus's latency alone)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="cluster: nginx on CPU 1, the rest on 0; single: server 0, viewers 1",
    )
    parser.add_argument("--time-limit", type=float, default=1800.0, help="end the run after this long, s")
    parser.add_argument("--json", metavar="FILE", help="write every figure here")
    parser.add_argument("--from-json", metavar="FILE", help="only print the tables of a past run")
    parser.add_argument("--probe", nargs=2, metavar=("URL", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        return probe_main(args.probe[0], float(args.probe[1]))
    if args.from_json:
        sys.stdout.write(tables(json.loads(Path(args.from_json).read_text())) + "\n")
        return 0
    args.parts = [p for p in args.parts.split(",") if p]
    args.modes = [m for m in args.modes.split(",") if m]
    args.counts = [int(n) for n in args.counts.split(",") if n]
    if set(args.parts) - {"edges", "origin", "single"}:
        parser.error("--parts: edges, origin and/or single")
    if set(args.modes) - {"mjpeg", "ws"} or not args.modes:
        parser.error("--modes: mjpeg and/or ws")
    if args.viewers < 2 or args.repeat < 1 or args.seconds <= 0:
        parser.error("--viewers >= 2, --repeat >= 1, --seconds > 0")
    for path in (NATS_SERVER, NGINX):
        if not Path(path).exists():
            parser.error(f"{path} is missing (Debian: apt install nats-server nginx-light)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * args.viewers + 512  # the viewers here, and nginx's two per viewer (it inherits it)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want), hard))
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # Ctrl-C's clean-up, even in the background
        signal.signal(signum, interrupted)
    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(max(1, int(args.time_limit)))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    command = "bench/cluster.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results: dict[str, Any] = {
        "command": command.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "args": {k: v for k, v in vars(args).items() if k not in ("json", "from_json")},
        "windows": [],
    }
    started = time.monotonic()
    failed = None
    with tempfile.TemporaryDirectory(prefix="camstream-cluster-") as tmp:
        logs = Path(tmp)
        try:
            for run in range(args.repeat):
                order = [cluster_run, single_run] if run % 2 == 0 else [single_run, cluster_run]
                for step in order:
                    if step is single_run and "single" in args.parts:
                        single_run(args, logs, run, results["windows"])
                    if step is cluster_run and ("edges" in args.parts or "origin" in args.parts):
                        cluster_run(args, logs, run, results["windows"])
        except KeyboardInterrupt:
            log.warning("interrupted: the figures so far")
            failed = "interrupted"
        except Exception as exc:  # the figures so far are still written, then the error
            log.exception("failed")
            failed = f"{type(exc).__name__}: {exc}"
        finally:
            signal.alarm(0)
    results["error"] = failed
    results["minutes"] = round((time.monotonic() - started) / 60, 1)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    sys.stdout.write(tables(results) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
