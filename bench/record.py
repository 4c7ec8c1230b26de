"""What recording costs: server CPU with and without ``--record`` for one 30 fps camera.

    .venv/bin/python bench/record.py [--seconds 20] [--runs 2] [--dir FOLDER] [--out docs/recording.md]

The camera is the ``files`` driver over 30 realistic 640x480 JPEGs of about
41 KB (bench/fanout.py's frames) at 30 fps, pinned to one CPU.  Three
scenarios, each a fresh ``server.py`` process, each run ``--runs`` times:

- ``viewer``: one MJPEG viewer (bench/load.py on the other CPU), no recording:
  the camera and one stream.
- ``viewer+record``: the same with ``--record``: the difference is what
  recording one camera costs.
- ``record``: recording alone, nobody watching (the camera runs for it).

The server's CPU time is read from ``/proc/PID/task/*/schedstat`` over the
measured window.  The recordings go to ``--dir`` (default: a temporary
folder on the same disk as this repository), with 60 s segments; the report
gives the frames and bytes written per second and checks with ffprobe that
every finished segment plays.  Loopback only, bounded in time, stops by itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fanout import Process, machine, make_frames, run_load, server_cpu_s  # noqa: E402
from harness.process import free_port  # noqa: E402

log = logging.getLogger("bench.record")


def start(frames: Path, logs: Path, record: Path | None) -> Process:
    port = free_port()
    args = [
        *(sys.executable, str(ROOT / "server.py"), "--port", str(port), "--camera", "files"),
        *("--source", str(frames), "--fps", "30", "--log-level", "warning"),
    ]
    if record is not None:
        args += ["--record", str(record), "--record-segment", "60"]
    proc = Process(args, port, logs / f"server-{port}.log")
    proc.wait_listening("/status")
    return proc


def recording_status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
        return json.load(response)["recording"] or {}


def scenario(kind: str, frames: Path, logs: Path, folder: Path, seconds: float) -> dict:
    record = folder / f"{kind}-{time.monotonic_ns()}" if "record" in kind else None
    server = start(frames, logs, record)
    try:
        if kind == "record":
            time.sleep(2.0)  # the camera's first frames and the first segment open (warm-up)
            before = recording_status(server.port)
            cpu0, t0 = server_cpu_s(server.pid), time.monotonic()
            time.sleep(seconds)  # the measured window itself
            cpu_s, elapsed = server_cpu_s(server.pid) - cpu0, time.monotonic() - t0
            result: dict = {
                "seconds": round(elapsed, 2),
                "server_cpu_percent": round(100 * cpu_s / elapsed, 2),
            }
        else:
            before = recording_status(server.port) if record else {}
            t0 = time.monotonic()
            load = run_load(f"http://127.0.0.1:{server.port}/stream.mjpg", 1, seconds, server.pid)
            elapsed = load["seconds"]
            result = {
                "seconds": elapsed,
                "server_cpu_percent": load["server_cpu_percent"],
                "viewer_fps": load["fps_median"],
            }
        after = recording_status(server.port) if record else {}
        counted_s = time.monotonic() - t0  # between the two readings of the recording's counters
    finally:
        server.stop()
    if record is not None:
        frames_written = after["frames_recorded"] - before["frames_recorded"]
        bytes_written = after["bytes_recorded"] - before["bytes_recorded"]
        result["recorded_fps"] = round(frames_written / counted_s, 2)
        result["recorded_mb_per_s"] = round(bytes_written / counted_s / 1e6, 3)
        result["frames_not_recorded"] = after["frames_not_recorded"]
        result["segments_play"] = all(plays(path) for path in sorted(record.rglob("*.mkv")))
        shutil.rmtree(record, ignore_errors=True)
    return result


def plays(path: Path) -> bool:
    """ffprobe counts the frames of ``path`` without an error."""
    probe = ["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames"]
    result = subprocess.run(
        [*probe, "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode == 0 and not result.stderr and int(result.stdout.strip() or 0) > 0


def report(results: dict, command: str) -> str:
    def median(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results["runs"][kind])

    cost = median("viewer+record", "server_cpu_percent") - median("viewer", "server_cpu_percent")
    lines = [
        "# What recording costs",
        "",
        f"`{command}` on {results['machine']['cpu']} ({results['machine']['cpus']} CPUs), "
        f"{results['when']}: one `files` camera, 30 fps, 640x480 JPEGs of {results['frame_bytes']} bytes, "
        "server pinned to one CPU, recordings in 60 s segments on the repository's disk.",
        "",
        "| scenario | run | server CPU (% of a core) | viewer fps | recorded fps | written MB/s | dropped |"
        " segments play |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, runs in results["runs"].items():
        for i, r in enumerate(runs, 1):
            lines.append(
                f"| {kind} | {i} | {r['server_cpu_percent']:.2f} | {r.get('viewer_fps', '-')} "
                f"| {r.get('recorded_fps', '-')} | {r.get('recorded_mb_per_s', '-')} "
                f"| {r.get('frames_not_recorded', '-')} | {r.get('segments_play', '-')} |"
            )
    lines += [
        "",
        f"Recording one 30 fps camera costs **{cost:.2f} % of a core** (median `viewer+record` minus median "
        f"`viewer`); recording alone, with nobody watching, the whole server takes "
        f"{median('record', 'server_cpu_percent'):.2f} % of a core.  At these frame sizes a camera writes "
        f"{median('record', 'recorded_mb_per_s') * 3600 / 1000:.1f} GB an hour.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per run (default 20)")
    parser.add_argument("--runs", type=int, default=2, help="runs of each scenario (default 2)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to record (default: a temporary folder)"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "recording.md", help="the report (markdown)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if shutil.which("ffprobe") is None:
        parser.error("ffprobe is missing: apt-get install ffmpeg")
    work = Path(tempfile.mkdtemp(prefix="camstream-record-", dir=ROOT))
    folder = args.dir or work / "recordings"
    try:
        frames = work / "frames"
        frames.mkdir()
        frame_bytes = make_frames(frames)
        results: dict = {
            "machine": machine(),
            "when": time.strftime("%Y-%m-%d"),
            "frame_bytes": frame_bytes,
            "runs": {"viewer": [], "viewer+record": [], "record": []},
        }
        for run in range(args.runs):
            for kind in results["runs"]:
                result = scenario(kind, frames, work, folder, args.seconds)
                log.info("run %d %s: %s", run + 1, kind, result)
                results["runs"][kind].append(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    command = "python bench/record.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(results, command.strip())
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
