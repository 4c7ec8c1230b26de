"""Slow viewers: many MJPEG viewers that each read 1 kB a second, beside one normal viewer.

    .venv/bin/python bench/slow_viewers.py                    # 1000 of them for 60 s: docs/slow_viewers.md
    .venv/bin/python bench/slow_viewers.py --viewers 50 --seconds 5 --out /tmp/quick

A viewer on a bad link takes a frame of 40 KB in tens of seconds.  The server
writes one frame at a time to each viewer and skips the frames that come
while that write is still going (never a backlog: the README's "How it
works"), so all it holds for a slow viewer is the rest of that one frame (a
view of the frame's shared bytes, not a copy) and the connection's own state.  This benchmark
checks that the server's memory stays within that bound, and that a normal
viewer beside them keeps its frame rate:

1. a server (``files`` camera at 30 fps over 30 realistic 640x480 JPEGs of
   about 40 KB, bench/fanout.py's) pinned to CPU 0; this process and the
   normal viewer (bench/load.py) on CPU 1;
2. the normal viewer alone for ``--baseline`` seconds: its frame rate, the
   server's resident memory (RSS);
3. ``--viewers`` slow viewers connect: each socket's receive buffer is
   ``--rcvbuf`` bytes (set before connecting, so the TCP window stays
   small) and each reads ``--rate`` bytes a second, a quarter every 250 ms,
   all from this one process (selectors);
4. for ``--seconds``: the server's RSS and the kernel's send queues of its
   connections (``/proc/net/tcp``) every second, and the normal viewer's
   frames over the same window;
5. the server's ``/status`` (frames skipped, viewers stalled) and what the
   slow viewers got.

The bound: ``RSS before the slow viewers + viewers x (largest frame +
PER_VIEWER_BYTES)``, the second term what one viewer may hold (one frame's
rest, its connection's state).  Kernel socket buffers are not in the RSS: they
are reported beside it (listening.py's ``TCP_NOTSENT_LOWAT`` keeps them small).
Writes ``OUT/slow_viewers.md`` (``--out``, docs/ by default) and, with
``--json FILE``, every figure.  Loopback only; every process bounded in time and
stopped by its PID; this process raises its own ``ulimit -n`` (inherited by
the server) for the connections.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import fanout  # noqa: E402
from bench.fanout import LOAD_CPU, Process, machine, make_frames  # noqa: E402
from bench.load import server_rss_kb  # noqa: E402

log = logging.getLogger("bench.slow_viewers")

#: What one viewer's connection may cost the server besides the frame it holds
#: (Tornado's stream, the HTTP connection and handler, the feed's slot): an
#: allowance of about twice the 8.5 KB measured with 1 KB frames (docs/slow_viewers.md).
PER_VIEWER_BYTES = 16 * 1024
#: How often the slow viewers read (each reads rate x this much a time).
TICK_S = 0.25


def start_server(frames: Path, logs: Path, viewers: int, stall_timeout_s: float) -> Process:
    """The fan-out benchmark's server, with room for ``viewers`` and their stall timeout."""
    return fanout.start_server(
        frames, logs, 5.0, "--stall-timeout", str(stall_timeout_s), max_clients=viewers + 100
    )


def send_queues_kb(port: int) -> int:
    """What the kernel holds for the server's connections on ``port``: the sum of their
    send queues (bytes written, not yet acknowledged: /proc/net/tcp's ``tx_queue``), KB."""
    total = 0
    local = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines, None)
            for line in lines:
                fields = line.split()
                if len(fields) > 4 and fields[1].endswith(local) and fields[3] == "01":  # established
                    total += int(fields[4].split(":")[0], 16)
    return total // 1024


def status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as response:
        return json.load(response)


class SlowViewers:
    """``count`` MJPEG viewers of ``127.0.0.1:port``, each reading ``rate`` bytes a
    second through a receive buffer of ``rcvbuf`` bytes; this thread only."""

    def __init__(self, port: int, count: int, rate: int, rcvbuf: int, timeout_s: float = 60.0) -> None:
        self.rate = rate
        self.selector = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.received: dict[socket.socket, int] = {}
        self.closed_at: dict[socket.socket, float] = {}
        self.started = time.monotonic()
        request = f"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        deadline = time.monotonic() + timeout_s
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            sock.connect(("127.0.0.1", port))
            sock.sendall(request)
            sock.setblocking(False)
            self.socks.append(sock)
            self.received[sock] = 0
            if time.monotonic() > deadline:
                raise SystemExit("slow_viewers.py: error: connecting took too long")

    def read_once(self) -> None:
        """Each open viewer reads its share of one tick (``rate x TICK_S`` bytes)."""
        share = max(1, round(self.rate * TICK_S))
        now = time.monotonic()
        for sock in self.socks:
            if sock in self.closed_at:
                continue
            try:
                data = sock.recv(share)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self.closed_at[sock] = now - self.started
                continue
            self.received[sock] += len(data)

    def summary(self, seconds: float) -> dict:
        got = sorted(self.received.values())
        return {
            "viewers": len(self.socks),
            "still_connected": len(self.socks) - len(self.closed_at),
            "closed_by_the_server": len(self.closed_at),
            "first_closed_after_s": round(min(self.closed_at.values()), 1) if self.closed_at else None,
            "bytes_read_per_second_median": round(got[len(got) // 2] / seconds) if got else 0,
        }

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


def normal_viewer(port: int, seconds: float, pid: int) -> subprocess.Popen[str]:
    """bench/load.py: one viewer that reads as fast as it can, for ``seconds``."""
    return subprocess.Popen(
        [
            *(sys.executable, str(ROOT / "bench" / "load.py")),
            *("--url", f"http://127.0.0.1:{port}/stream.mjpg", "--viewers", "1"),
            *("--seconds", str(seconds), "--server-pid", str(pid), "--cpu", str(LOAD_CPU)),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(proc: subprocess.Popen[str], timeout_s: float) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError("bench/load.py did not finish") from None
    if proc.returncode != 0:
        raise RuntimeError(f"bench/load.py failed: {err[-2000:]}")
    return json.loads(out)


def frame_sizes(frames: Path) -> tuple[int, int]:
    sizes = [p.stat().st_size for p in frames.iterdir()]
    return round(sum(sizes) / len(sizes)), max(sizes)


def run(args: argparse.Namespace, frames: Path, logs: Path) -> dict:
    mean_bytes, max_bytes = frame_sizes(frames)
    server = start_server(frames, logs, args.viewers, args.stall_timeout)
    try:
        baseline = finished(normal_viewer(server.port, args.baseline, server.pid), args.baseline + 60)
        rss_before = server_rss_kb(server.pid) or 0
        log.info("alone: %.1f fps, server RSS %.1f MB", baseline["fps_median"], rss_before / 1024)
        slow = SlowViewers(server.port, args.viewers, args.rate, args.rcvbuf)
        try:
            # The last requests may still be on their way in: wait (with a deadline) for them.
            deadline = time.monotonic() + 10
            while (connected := status(server.port)["viewers"]).get("mjpeg", 0) < args.viewers:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)  # polling /status with a deadline
            rss_connected = server_rss_kb(server.pid) or 0
            log.info("%d slow viewers connected, server RSS %.1f MB", args.viewers, rss_connected / 1024)
            viewer = normal_viewer(server.port, args.seconds, server.pid)
            series: list[tuple[float, int, int]] = []
            t0 = time.monotonic()
            next_sample = t0
            # The normal viewer waits for its first frame, then counts for --seconds.
            while viewer.poll() is None and time.monotonic() - t0 < args.seconds + 60:
                slow.read_once()
                now = time.monotonic()
                if now >= next_sample:
                    sample = (server_rss_kb(server.pid) or 0, send_queues_kb(server.port))
                    series.append((round(now - t0, 1), *sample))
                    next_sample += 1.0
                time.sleep(max(0.0, TICK_S - (time.monotonic() - now)))  # the slow viewers' pace
            elapsed = time.monotonic() - t0
            beside = finished(viewer, 10)
            after = status(server.port)
            slow_summary = slow.summary(elapsed)
        finally:
            slow.close()
    finally:
        server.stop()
    per_viewer = max_bytes + PER_VIEWER_BYTES
    bound_kb = rss_before + args.viewers * per_viewer / 1024
    peak_kb = max(rss for _, rss, _ in series)
    half = [rss for t, rss, _ in series if t >= elapsed / 2]
    queued = [kb for _, _, kb in series]
    return {
        "frame_bytes_mean": mean_bytes,
        "frame_bytes_max": max_bytes,
        "viewers": args.viewers,
        "rate_bytes_per_s": args.rate,
        "rcvbuf": args.rcvbuf,
        "stall_timeout_s": args.stall_timeout,
        "seconds": round(elapsed, 1),
        "viewers_at_the_server": connected,
        "alone": {
            "fps_median": baseline["fps_median"],
            "latency_ms": baseline["latency_ms"],
            "seconds": baseline["seconds"],
        },
        "beside": {
            "fps_median": beside["fps_median"],
            "fps_min": beside["fps_min"],
            "duplicates": beside["duplicates"],
            "errors": beside["errors"],
            "latency_ms": beside["latency_ms"],
            "seconds": beside["seconds"],
        },
        "server_cpu_percent": beside.get("server_cpu_percent"),
        "rss_kb": {
            "before": rss_before,
            "connected": rss_connected,
            "peak": peak_kb,
            "end": series[-1][1],
            "second_half_min": min(half) if half else None,
            "second_half_max": max(half) if half else None,
            "bound": round(bound_kb),
            "growth_per_viewer": round((peak_kb - rss_before) * 1024 / args.viewers),
        },
        "rss_series": series,
        "kernel_send_queues_kb": {"peak": max(queued), "end": queued[-1]},
        "slow": slow_summary,
        "server": {
            "frames_skipped": after["frames_skipped"],
            "frames_sent": after["frames_sent"],
            "viewers_stalled": after["viewers_stalled"],
            "viewers_at_the_end": after["viewers"],
        },
        "within_bound": peak_kb <= bound_kb,
    }


def write_report(out: Path, result: dict) -> None:
    rss = result["rss_kb"]
    mb = lambda kb: f"{kb / 1024:.1f}"  # noqa: E731
    n = result["viewers"]
    series = result["rss_series"]
    step = max(1, len(series) // 12)
    rows = "\n".join(
        f"| {t:.0f} | {mb(kb)} | {mb(queued)} |"
        for t, kb, queued in series[::step] + ([series[-1]] if (len(series) - 1) % step else [])
    )
    kernel = result["kernel_send_queues_kb"]
    load = result["load_average"]
    slow = result["slow"]
    beside = result["beside"]
    latency = beside["latency_ms"]
    frame_kb, allowance_kb = result["frame_bytes_max"] // 1024, PER_VIEWER_BYTES // 1024
    text = f"""# Slow viewers: memory stays bounded, a normal viewer keeps its rate

`{result["command"]}` ({result["date"]}; {result["machine"]["cpus"]} CPUs, {result["machine"]["cpu"]},
Python {result["machine"]["python"]}, Tornado {result["machine"]["tornado"]}; the machine's load
average {load[0]:.1f} at the start, {load[1]:.1f} at the end: other work shares its CPUs, so
compare the normal viewer beside the slow ones with the same viewer alone just before)

{n} MJPEG viewers that each read {result["rate_bytes_per_s"]} bytes a second through a receive
buffer of {result["rcvbuf"]} bytes (the kernel doubles it), beside one viewer that reads as fast
as it can, for {result["seconds"]:.0f} s; the `files` camera at 30 fps over 640x480 JPEGs of
{result["frame_bytes_mean"]} bytes on average ({result["frame_bytes_max"]} at most).  The server
runs with `--stall-timeout {result["stall_timeout_s"]:g}`, so that it keeps every slow viewer for
the whole run: with the default of 30 s it disconnects a viewer whose one frame has not been
written within 30 s, which at 1 kB a second is every one of them.  Server pinned to CPU 0, clients
to CPU 1 ([bench/slow_viewers.py](../bench/slow_viewers.py)).

## The bound, and why

The server writes one frame at a time to each viewer: a viewer whose previous frame is still being
written skips the new ones (never a backlog: the README's "How it works").  What it holds for a
slow viewer is therefore the rest of one frame, kept as a view of that frame's bytes (shared by
every viewer that got the same frame, never copied per viewer), plus its connection's state
(Tornado's stream, the HTTP connection and handler, the feed's slot).  So:

    RSS <= RSS before the slow viewers + viewers x (largest frame + {allowance_kb} KB)
        =  {mb(rss["before"])} MB + {n} x ({frame_kb} KB + {allowance_kb} KB)
        =  {mb(rss["bound"])} MB

whatever the viewers do and however long they stay.  The {allowance_kb} KB a connection is an
allowance of about twice what a connection was measured to cost (8.5 KB: 1000 viewers of 1 KB
frames, where the frames weigh nothing); the growth measured here is {rss["growth_per_viewer"]}
bytes per slow viewer (peak less the RSS before, over {n}), frames included: viewers that
connected within the same 33 ms share one frame's bytes, so the frame term is reached only when
every viewer holds a different frame.

The kernel's part is not in the RSS, but it is memory too, and a backlog: Linux grows the send
buffer of a connection whose reader is slow up to `tcp_wmem`'s maximum (4 MB by default).  Measured
before the server set `TCP_NOTSENT_LOWAT` on its connections (listening.py), 50 such viewers had
2.7 MB each queued in the kernel, some 70 frames, minutes old by the time they are read, and
1000 of them would take more than the machine's whole TCP allowance (`tcp_mem`, 2.2 GB here),
slowing every connection on it.  Now the kernel takes no more for a connection while 64 KB wait unsent: about
64 KB plus what is in flight a viewer, and the rest of the frame waits in the server's one
pending write.  Measured: {mb(kernel["peak"])} MB for the {n} at most.

## What was measured

| | |
|---|---|
| server RSS before the slow viewers | {mb(rss["before"])} MB |
| with the {n} slow viewers connected | {mb(rss["connected"])} MB |
| peak over the run | {mb(rss["peak"])} MB |
| second half of the run, lowest to highest | {mb(rss["second_half_min"] or 0)} to \
{mb(rss["second_half_max"] or 0)} MB |
| at the end | {mb(rss["end"])} MB |
| the bound | {mb(rss["bound"])} MB: {"held" if result["within_bound"] else "**exceeded**"} |
| the kernel's send queues of the server's connections | {mb(kernel["peak"])} MB at most, \
{mb(kernel["end"])} MB at the end |
| the normal viewer alone, {result["alone"]["seconds"]:.0f} s before | {result["alone"]["fps_median"]} fps, \
latency median {result["alone"]["latency_ms"]["median"]} ms, p99 {result["alone"]["latency_ms"]["p99"]} ms |
| the normal viewer beside them, {beside["seconds"]:.0f} s | {beside["fps_median"]} fps, \
latency median {latency["median"]} ms, p99 {latency["p99"]} ms |
| its duplicates, errors | {beside["duplicates"]}, {beside["errors"]} |
| server CPU over the window | {result["server_cpu_percent"]} % of a core |
| slow viewers still connected at the end | {slow["still_connected"]} of {slow["viewers"]} |
| bytes each slow viewer read, a second (median) | {slow["bytes_read_per_second_median"]} |
| frames the server skipped for busy viewers | {result["server"]["frames_skipped"]} |
| viewers the server disconnected as stalled | {result["server"]["viewers_stalled"]} |

Latency is capture to arrival, both clocks this machine's.  Over the run (seconds after the normal
viewer started):

| s | server RSS, MB | kernel send queues, MB |
|---|---|---|
{rows}
"""
    (out / "slow_viewers.md").write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=1000, help="slow viewers")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long they stay (measured)")
    parser.add_argument("--rate", type=int, default=1000, help="bytes a second each slow viewer reads")
    parser.add_argument("--rcvbuf", type=int, default=4096, help="each slow viewer's SO_RCVBUF, bytes")
    parser.add_argument("--baseline", type=float, default=20.0, help="seconds of the normal viewer alone")
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=600.0,
        help="the server's --stall-timeout (its default, 30, drops a viewer whose frame takes longer)",
    )
    parser.add_argument("--out", default=str(ROOT / "docs"), help="where the report goes")
    parser.add_argument("--json", metavar="FILE", help="also write every figure here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.viewers + 256
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            raise SystemExit(f"slow_viewers.py: error: ulimit -n is {hard} at most; {want} are needed")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # the server inherits it
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > LOAD_CPU:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {LOAD_CPU})
    command = "bench/slow_viewers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="camstream-slow-") as tmp:
        frames = Path(tmp) / "frames"
        frames.mkdir()
        logs = Path(tmp) / "logs"
        logs.mkdir()
        make_frames(frames)
        load_before = os.getloadavg()[0]
        result = {
            "command": command.strip(),
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": machine(),
            **run(args, frames, logs),
        }
        result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    log.info(
        "RSS before %.1f MB, peak %.1f MB, bound %.1f MB; the normal viewer %.1f fps beside them",
        result["rss_kb"]["before"] / 1024,
        result["rss_kb"]["peak"] / 1024,
        result["rss_kb"]["bound"] / 1024,
        result["beside"]["fps_median"],
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    write_report(out, result)
    log.info("wrote %s", out / "slow_viewers.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
