"""Basic figures of a running server: the frame rate one viewer receives, and the
server's CPU use with no viewer once the camera has been idled.

    .venv/bin/python bench/basic.py [--fps 30] [--seconds 10] [--idle-seconds 10]

Starts ``server.py`` (emulated camera) on a free loopback port, reads its MJPEG
stream with a raw socket client, disconnects, waits for the idle stop, then reads
the server's CPU time from ``/proc/PID/task/*/schedstat`` (nanoseconds on a CPU,
exact, unlike the tick-based ``/proc/PID/stat``).  Everything is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stream import StreamReader  # noqa: E402
from harness.process import stop_process  # noqa: E402

log = logging.getLogger("bench.basic")


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far, in nanoseconds."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):  # a thread that ended meanwhile
            total += int(stat.read_text().split()[0])
    return total


def thread_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
        return json.load(response)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=float, default=30)
    parser.add_argument("--seconds", type=float, default=10, help="how long the viewer reads")
    parser.add_argument("--idle-timeout", type=float, default=2, help="the server's --idle-timeout")
    parser.add_argument("--idle-seconds", type=float, default=10, help="how long idle CPU is measured")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    proc = subprocess.Popen(
        [
            *(sys.executable, str(ROOT / "server.py"), "--port", "0", "--fps", str(args.fps)),
            *("--idle-timeout", str(args.idle_timeout), "--log-level", "warning"),
        ],
        cwd=ROOT,
    )
    try:
        # --log-level warning hides the URL line, so ask the kernel for the port.
        port = 0
        deadline = time.monotonic() + 20
        while not port and time.monotonic() < deadline:
            out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
            found = re.search(rf"127\.0\.0\.1:(\d+)\s.*pid={proc.pid},", out)
            port = int(found.group(1)) if found else 0
            time.sleep(0.05)
        if not port:
            raise RuntimeError("the server did not start listening")

        reader = StreamReader(port)
        reader.wait_for(5, timeout_s=20)  # warm up: the camera has started
        start_parts, start = len(reader.parts), time.monotonic()
        cpu_start = cpu_ns(proc.pid)
        time.sleep(args.seconds)  # the measurement period
        parts = list(reader.parts)
        elapsed = time.monotonic() - start
        cpu_stream = (cpu_ns(proc.pid) - cpu_start) / 1e9 / elapsed
        received = parts[start_parts:]
        stamps = [float(p.headers["x-timestamp"]) for p in received]
        duplicates = len(stamps) - len(set(stamps))
        latencies = sorted(p.received_at - s for p, s in zip(received, stamps, strict=True))
        reader.close()

        deadline = time.monotonic() + args.idle_timeout + 10
        while status(port)["running"] and time.monotonic() < deadline:
            time.sleep(0.1)
        stopped = not status(port)["running"]
        time.sleep(0.5)  # let the status request itself settle before measuring
        cpu_before, t0 = cpu_ns(proc.pid), time.monotonic()
        time.sleep(args.idle_seconds)
        idle = (cpu_ns(proc.pid) - cpu_before) / 1e9 / (time.monotonic() - t0)

        report = {
            "fps_configured": args.fps,
            "fps_received_one_viewer": round(len(received) / elapsed, 2),
            "frames_received": len(received),
            "duplicates": duplicates,
            "latency_capture_to_arrival_ms_p50": round(1000 * latencies[len(latencies) // 2], 2),
            "latency_capture_to_arrival_ms_max": round(1000 * latencies[-1], 2),
            "server_cpu_streaming_percent_of_a_core": round(100 * cpu_stream, 2),
            "camera_stopped_after_idle_timeout": stopped,
            "server_threads_when_idle": thread_count(proc.pid),
            "server_cpu_idle_percent_of_a_core": round(100 * idle, 4),
            "idle_seconds_measured": args.idle_seconds,
        }
        print(json.dumps(report, indent=2))  # noqa: T201 - the report is this script's output
        return 0
    finally:
        stop_process(proc)


if __name__ == "__main__":
    raise SystemExit(main())
