"""Figures of the mjpeg camera relaying another server: CPU, and recovery after an upstream restart.

    .venv/bin/python bench/relay.py [--seconds 10] [--restarts 3] [--down-seconds 0]
                                    [--width 640 --height 480 --fps 30]

Starts an upstream ``server.py`` (emulated camera at the given size and rate)
and a relay ``server.py --camera mjpeg --source http://127.0.0.1:UP/stream.mjpg``
on free loopback ports, reads the relay's MJPEG stream with one raw-socket
viewer, and reads both servers' CPU time from ``/proc/PID/task/*/schedstat``
over ``--seconds``.  Then it restarts the upstream on the same port
``--restarts`` times, each after ``--down-seconds`` of outage, and measures,
for the viewer of the relay, the time from the new upstream listening to the
first live frame (a part whose bytes are one of the upstream's; the relay
shows a "no signal" picture in between).
Everything is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.basic import cpu_ns  # noqa: E402
from bench.stream import StreamReader  # noqa: E402
from harness.process import stop_process  # noqa: E402

log = logging.getLogger("bench.relay")


class Server:
    """``server.py ARGS`` on a loopback port, its log in a file."""

    def __init__(self, args: list[str], log_dir: Path, name: str) -> None:
        self.args = args
        self.log_dir = log_dir
        self.name = name
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout_s: float = 20.0) -> float:
        """Start and wait until it listens; returns the monotonic time it was seen listening."""
        self.starts += 1
        log_file = self.log_dir / f"{self.name}.{self.starts}.log"
        with open(log_file, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "server.py"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    *self.args,
                ],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = re.search(r"on http://127\.0\.0\.1:(\d+)/", log_file.read_text(errors="replace"))
            if found:
                self.port = int(found.group(1))
                return time.monotonic()
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {log_file.read_text()}")
            time.sleep(0.01)  # polling the log file with a deadline
        raise TimeoutError(f"{self.name} did not start within {timeout_s} s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def wait_for_live_part(reader: StreamReader, start_index: int, live: set[bytes], timeout_s: float) -> float:
    """Monotonic arrival time of the first part after ``start_index`` whose bytes are in ``live``."""
    deadline = time.monotonic() + timeout_s
    index = start_index
    while time.monotonic() < deadline:
        parts = reader.wait_for(index + 1, timeout_s=max(0.01, deadline - time.monotonic()))
        for part in parts[index:]:
            if part.body in live:
                return part.arrived
        index = len(parts)
    raise TimeoutError(f"no live frame within {timeout_s} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=float, default=30)
    parser.add_argument("--seconds", type=float, default=10, help="how long CPU is measured")
    parser.add_argument("--restarts", type=int, default=3, help="upstream restarts to time")
    parser.add_argument(
        "--down-seconds", type=float, default=0, help="how long the upstream stays down at each restart"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with tempfile.TemporaryDirectory(prefix="camstream-bench-") as tmp:
        size = ["--width", str(args.width), "--height", str(args.height), "--fps", str(args.fps)]
        upstream = Server(["--camera", "emulated", *size], Path(tmp), "upstream")
        relay = Server([], Path(tmp), "relay")
        reader = None
        try:
            upstream.start()
            relay.args = ["--camera", "mjpeg", "--source", f"http://127.0.0.1:{upstream.port}/stream.mjpg"]
            relay.start()
            reader = StreamReader(relay.port)
            reader.wait_for(2 * int(args.fps), timeout_s=30)  # warm up: both cameras run
            first = len(reader.parts)
            relay_cpu, upstream_cpu, started = cpu_ns(relay.pid), cpu_ns(upstream.pid), time.monotonic()
            time.sleep(args.seconds)  # the measurement period
            elapsed = time.monotonic() - started
            relay_cpu = (cpu_ns(relay.pid) - relay_cpu) / 1e9 / elapsed
            upstream_cpu = (cpu_ns(upstream.pid) - upstream_cpu) / 1e9 / elapsed
            received = list(reader.parts)[first:]
            live = {p.body for p in received}  # the emulated loop: the same bytes every pass

            waits = []
            for _ in range(args.restarts):
                upstream.stop()
                stopped = time.monotonic()
                index = len(reader.parts)
                time.sleep(args.down_seconds)  # the outage being simulated
                listening = upstream.start()
                arrived = wait_for_live_part(reader, index, live, timeout_s=30)
                waits.append(
                    {
                        "upstream_down_s": round(listening - stopped, 3),
                        "listening_to_first_live_frame_s": round(arrived - listening, 3),
                    }
                )
                reader.wait_for(len(reader.parts) + int(args.fps), timeout_s=30)  # streaming again
        finally:
            if reader is not None:
                reader.close()
            relay.stop()
            upstream.stop()

    report = {
        "source": f"emulated {args.width}x{args.height} at {args.fps:g} fps, relayed by --camera mjpeg",
        "seconds_measured": round(elapsed, 2),
        "fps_received_by_the_relays_viewer": round(len(received) / elapsed, 2),
        "mean_jpeg_bytes": round(sum(len(p.body) for p in received) / max(1, len(received))),
        "relay_server_cpu_percent_of_a_core": round(100 * relay_cpu, 2),
        "upstream_server_cpu_percent_of_a_core": round(100 * upstream_cpu, 2),
        "restarts": waits,
    }
    print(json.dumps(report, indent=2))  # noqa: T201 - the report is this script's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
