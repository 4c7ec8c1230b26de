"""The fan-out benchmark: the server's cost per viewer, against the bare cost of the bytes.

    .venv/bin/pip install -e '.[bench]'      # matplotlib, for the plot
    .venv/bin/python bench/fanout.py         # the full run, about 15 minutes
    .venv/bin/python bench/fanout.py --points 1,100 --repeat 1 --seconds 5 --out /tmp/quick

For each number of viewers N (``--points``), ``--repeat`` times:

1. the reference (``bench/reference.py``: the same bytes to the same number
   of sockets with nothing but ``socket.send``) under the load generator;
2. ``server.py`` with the ``files`` camera at 30 fps over 30 realistic
   640x480 JPEGs of about 40 KB, under N MJPEG viewers;
3. the same under N WebSocket viewers.

Each is a fresh process pinned to CPU 0; the load generator (``bench/load.py``)
is pinned to CPU 1.  The figures of a run are those of ``bench/load.py``:
frame rates across viewers (median, 5th percentile), duplicates, errors,
latency from capture to arrival, the load generator's own CPU, and the
server's CPU over exactly the measured window, per delivered frame and as a
ratio to the reference's of the same N and run (the ratio is what stays
comparable between runs on a shared, noisy machine).  Then two scenarios:
100 readers with 50 viewers that never read (the readers' rate, and the
server's memory growth while those are attached), and the server's CPU with
no viewer once the camera has been idled.

Writes ``OUT/benchmarks.json`` (every run), ``OUT/benchmarks.md`` (tables)
and, when matplotlib is installed, ``OUT/benchmarks.png`` (server CPU and 5th
percentile frame rate against viewers).  Loopback only; every process is
bounded in time and stopped by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import server_cpu_s  # noqa: E402
from harness.process import free_port, pin, stop_process  # noqa: E402

log = logging.getLogger("bench.fanout")

SERVER_CPU = 0
LOAD_CPU = 1


# -- frames -------------------------------------------------------------------
def render(index: int, count: int, quality: int) -> bytes:
    """A 640x480 picture with the grain and gradients of a camera's, and motion."""
    rng = random.Random(index)
    noise = Image.effect_noise((640, 480), 48).convert("RGB")
    sky = Image.linear_gradient("L").rotate(90).resize((640, 480)).convert("RGB")
    image = Image.blend(sky, noise, 0.45)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.randrange(640), rng.randrange(240, 480)
        draw.rectangle([x, y, x + rng.randrange(20, 120), y + rng.randrange(10, 60)], fill=rng.randrange(255))
    x = round(index / count * 520)
    draw.ellipse([x, 120, x + 120, 240], fill=(210, 60, 40))
    image = image.filter(ImageFilter.GaussianBlur(0.8))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def make_frames(folder: Path, count: int = 30, target_bytes: int = 40_000) -> int:
    """Write ``count`` JPEGs of about ``target_bytes`` each; return their mean size."""
    quality = min(range(30, 96, 5), key=lambda q: abs(len(render(0, count, q)) - target_bytes))
    sizes = []
    for i in range(count):
        data = render(i, count, quality)
        (folder / f"{i:03d}.jpg").write_bytes(data)
        sizes.append(len(data))
    return round(sum(sizes) / len(sizes))


# -- processes ----------------------------------------------------------------
class Process:
    """A benchmark process on a known loopback port, pinned, stopped by its PID."""

    def __init__(self, args: list[str], port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        with open(log_path, "wb") as out:
            self.proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        pin(self.proc.pid, SERVER_CPU)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_listening(self, path: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                if path:
                    urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5).close()
                pin(self.pid, SERVER_CPU)  # threads started since
                return
            time.sleep(0.05)  # polling the port with a deadline
        raise TimeoutError(f"not listening after {timeout_s} s")

    def stop(self) -> None:
        stop_process(self.proc)


def start_server(
    frames: Path, logs: Path, idle_timeout: float = 5.0, *extra: str, max_clients: int = 5000
) -> Process:
    """A server of ``frames`` at 30 fps on a free port (``extra``: more options), its log
    in ``logs``; returns once it answers ``/status``."""
    port = free_port()
    proc = Process(
        [
            *(sys.executable, str(ROOT / "server.py"), "--port", str(port), "--camera", "files"),
            *("--source", str(frames), "--fps", "30", "--idle-timeout", str(idle_timeout)),
            *("--log-level", "warning", "--max-clients", str(max_clients), *extra),
        ],
        port,
        logs / f"server-{port}.log",
    )
    proc.wait_listening("/status")
    return proc


def start_reference(frames: Path, logs: Path) -> Process:
    port = free_port()
    proc = Process(
        [sys.executable, str(ROOT / "bench" / "reference.py"), "--source", str(frames), "--port", str(port)],
        port,
        logs / f"reference-{port}.log",
    )
    proc.wait_listening("")
    return proc


def run_load(url: str, viewers: int, seconds: float, pid: int, *extra: str) -> dict:
    cmd = [
        *(sys.executable, str(ROOT / "bench" / "load.py"), "--url", url, "--viewers", str(viewers)),
        *("--seconds", str(seconds), "--server-pid", str(pid), "--cpu", str(LOAD_CPU), *extra),
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=seconds * 3 + 120)
    if result.returncode != 0:
        raise RuntimeError(f"load.py failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout)


def status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
        return json.load(response)


# -- the runs -----------------------------------------------------------------
def point(frames: Path, logs: Path, viewers: int, seconds: float, modes: list[str]) -> dict:
    out: dict[str, dict] = {}
    ref = start_reference(frames, logs)
    try:
        out["reference"] = run_load(f"http://127.0.0.1:{ref.port}/stream.mjpg", viewers, seconds, ref.pid)
    finally:
        ref.stop()
    for mode in modes:
        server = start_server(frames, logs)
        try:
            path = "ws://127.0.0.1:{}/ws" if mode == "ws" else "http://127.0.0.1:{}/stream.mjpg"
            out[mode] = run_load(path.format(server.port), viewers, seconds, server.pid)
        finally:
            server.stop()
        ref_us = out["reference"]["server_us_per_frame"]
        us = out[mode]["server_us_per_frame"]
        out[mode]["ratio"] = round(us / ref_us, 2) if us and ref_us else None
    return out


def stalled_scenario(frames: Path, logs: Path, seconds: float) -> dict:
    server = start_server(frames, logs)
    try:
        return run_load(
            f"http://127.0.0.1:{server.port}/stream.mjpg", 100, seconds, server.pid, "--stalled", "50"
        )
    finally:
        server.stop()


def idle_scenario(frames: Path, logs: Path, seconds: float) -> dict:
    server = start_server(frames, logs, idle_timeout=2.0)
    try:
        run_load(f"http://127.0.0.1:{server.port}/stream.mjpg", 10, 3, server.pid)
        deadline = time.monotonic() + 30
        while status(server.port)["running"] and time.monotonic() < deadline:
            time.sleep(0.1)  # polling /status with a deadline
        running = status(server.port)["running"]
        cpu0 = server_cpu_s(server.pid)
        t0 = time.monotonic()
        time.sleep(seconds)  # the measured idle window itself
        cpu_s = server_cpu_s(server.pid) - cpu0
        elapsed = time.monotonic() - t0
        return {
            "camera_running": running,
            "seconds": round(elapsed, 2),
            "server_cpu_percent": round(100 * cpu_s / elapsed, 3),
        }
    finally:
        server.stop()


# -- the report ---------------------------------------------------------------
def machine() -> dict:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import tornado

    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tornado": tornado.version,
    }


def row(n: int, run: int, mode: str, r: dict) -> str:
    lat = r["latency_ms"]
    ratio = r.get("ratio")
    return (
        f"| {n} | {run + 1} | {mode} | {r['fps_median']:.1f} | {r['fps_p5']:.1f} | {r['duplicates']} "
        f"| {r['errors']} | {lat['median']:.1f} | {lat['p99']:.1f} | {r['server_cpu_percent']:.1f} "
        f"| {r['server_us_per_frame']} | {'' if ratio is None else f'{ratio:.2f}'} "
        f"| {r['server_rss_kb'] / 1024:.0f} | {r['cpu_percent']:.0f} |"
    )


def targets(results: dict) -> list[str]:
    """The issue's targets against this run's figures (the worst run of each point)."""

    def runs(n: int, mode: str) -> list[dict]:
        return [e[mode] for e in results["points"] if e["viewers"] == n and mode in e]

    rows = []

    def add(what: str, figure: str, target: str, ok: bool) -> None:
        rows.append(f"| {what} | {figure} | {target} | {'met' if ok else '**missed**'} |")

    if runs(1000, "mjpeg"):
        r = runs(1000, "mjpeg")
        p5 = min(x["fps_p5"] for x in r)
        dup = sum(x["duplicates"] for x in r)
        add(
            "1000 MJPEG viewers: fps, 5th percentile; duplicates",
            f"{p5:.1f}; {dup}",
            ">= 29; 0",
            p5 >= 29 and not dup,
        )
    for mode, limit in (("mjpeg", 1.5), ("ws", 2.0)):
        r = [x["ratio"] for x in runs(500, mode) if x.get("ratio")]
        if r:
            add(
                f"500 {mode} viewers: CPU per frame / reference",
                f"{min(r):.2f}-{max(r):.2f}",
                f"<= {limit}",
                max(r) <= limit,
            )
    lat = [x["latency_ms"]["p99"] for mode in results["modes"] for x in runs(500, mode)]
    if lat:
        add("500 viewers: latency p99 (ms)", f"{min(lat):.1f}-{max(lat):.1f}", "<= 20", max(lat) <= 20)
    stalled = results.get("stalled")
    if stalled:
        before = stalled["before_stalled"]
        growth = (stalled["server_rss_kb"] - before["server_rss_kb"]) / 1024
        add(
            "100 readers with 50 never-readers: fps p5 (alone / with)",
            f"{before['fps_p5']:.1f} / {stalled['fps_p5']:.1f}",
            "not lower",
            stalled["fps_p5"] >= before["fps_p5"] - 0.5,
        )
        add("memory growth with the never-readers (MB)", f"{growth:.1f}", "< 10", growth < 10)
    idle = results.get("idle")
    if idle:
        ok = idle["server_cpu_percent"] < 0.5 and not idle["camera_running"]
        add(
            "no viewers: camera stopped; server CPU (% of a core)",
            f"{idle['server_cpu_percent']:.3f}",
            "< 0.5",
            ok,
        )
    if not rows:
        return []
    return ["## Targets", "", "| | measured | target | |", "|---|---|---|---|", *rows, ""]


def write_report(out: Path, results: dict, command: str) -> None:
    lines = [
        "# Fan-out benchmark",
        "",
        f"Generated by `{command.strip()}` on {results['date']}.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in results["machine"].items()) + ".",
        f"Frames: 30 JPEGs of 640x480, {results['frame_bytes']} bytes on average, "
        "the `files` camera at 30 fps.",
        f"Each run measures {results['seconds']:g} s after every viewer has its first frame. The server",
        "(or the reference) is pinned to CPU 0, the load generator to CPU 1.",
        "",
        "Columns: frame rate across viewers (median, 5th percentile), duplicate frames, viewers with an",
        "error, latency from capture to the frame's last byte (median, p99), server CPU (% of a core),",
        "server CPU per delivered frame (us), that as a ratio to the reference's of the same N and run,",
        "the server's resident memory at the end (MB), and the load generator's own CPU (%).",
        "",
        *targets(results),
        "## Every run",
        "",
        "| viewers | run | server | fps median | fps p5 | dup | err | latency p50 ms | p99 ms "
        "| CPU % | us/frame | ratio | RSS MB | load CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in results["points"]:
        for mode in ("reference", *results["modes"]):
            lines.append(row(entry["viewers"], entry["run"], mode, entry[mode]))
    stalled = results.get("stalled")
    if stalled:
        before = stalled["before_stalled"]
        growth = (stalled["server_rss_kb"] - before["server_rss_kb"]) / 1024
        lines += [
            "",
            "## 50 viewers that never read, next to 100 that do",
            "",
            "| | fps median | fps p5 | dup | err | latency p99 ms | server RSS MB |",
            "|---|---|---|---|---|---|---|",
            f"| 100 readers alone | {before['fps_median']:.1f} | {before['fps_p5']:.1f} "
            f"| {before['duplicates']} | {before['errors']} | {before['latency_ms']['p99']:.1f} "
            f"| {before['server_rss_kb'] / 1024:.1f} |",
            f"| with 50 never-readers attached | {stalled['fps_median']:.1f} | {stalled['fps_p5']:.1f} "
            f"| {stalled['duplicates']} | {stalled['errors']} | {stalled['latency_ms']['p99']:.1f} "
            f"| {stalled['server_rss_kb'] / 1024:.1f} |",
            "",
            f"Memory growth while the never-readers are attached: {growth:.1f} MB.",
            f"During the window the server skipped {stalled.get('server_frames_skipped', '?')} frames for"
            f" them; every frame would be {round(50 * 30 * stalled['seconds'])} (50 x 30 fps x"
            f" {stalled['seconds']:.0f} s): their sockets stayed full.",
        ]
    idle = results.get("idle")
    if idle:
        lines += [
            "",
            "## No viewers",
            "",
            f"After the last viewer left and the idle timeout stopped the camera "
            f"(camera running: {idle['camera_running']}), the server used "
            f"{idle['server_cpu_percent']:.3f} % of a core over {idle['seconds']:g} s.",
        ]
    if (out / "benchmarks.png").exists():
        lines += ["", "![Server CPU and 5th-percentile frame rate against viewers](benchmarks.png)"]
    (out / "benchmarks.md").write_text("\n".join(lines) + "\n")


def plot(out: Path, results: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return
    fig, (cpu_ax, fps_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode in ("reference", *results["modes"]):
        best: dict[int, dict] = {}
        for entry in results["points"]:
            r = entry[mode]
            n = entry["viewers"]
            if n not in best or r["server_cpu_percent"] < best[n]["server_cpu_percent"]:
                best[n] = r
        xs = sorted(best)
        label = {"reference": "bare socket.send", "mjpeg": "server, MJPEG", "ws": "server, WebSocket"}[mode]
        cpu_ax.plot(xs, [best[x]["server_cpu_percent"] for x in xs], marker="o", label=label)
        fps_ax.plot(xs, [best[x]["fps_p5"] for x in xs], marker="o", label=label)
    cpu_ax.set(xlabel="viewers", ylabel="server CPU, % of a core", title="CPU (best run)")
    fps_ax.set(xlabel="viewers", ylabel="frames per second, 5th percentile", title="Frame rate", ylim=(0, 32))
    for ax in (cpu_ax, fps_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "benchmarks.png", dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default="1,50,100,200,500,1000", help="numbers of viewers")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each point")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--modes", default="mjpeg,ws", help="mjpeg, ws or both")
    parser.add_argument("--no-scenarios", action="store_true", help="skip the never-reader and idle runs")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="where the report goes")
    parser.add_argument("--from-json", metavar="FILE", help="only rewrite the report and plot of a past run")
    args = parser.parse_args(argv)
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        out = Path(args.out)
        plot(out, results)
        write_report(out, results, results.get("command", "bench/fanout.py"))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    points = [int(x) for x in args.points.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "bench/fanout.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="camstream-bench-") as tmp:
        frames = Path(tmp) / "frames"
        frames.mkdir()
        logs = Path(tmp) / "logs"
        logs.mkdir()
        frame_bytes = make_frames(frames)
        log.info("30 frames of 640x480, %d bytes on average", frame_bytes)
        results: dict = {
            "command": command.strip(),
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": machine(),
            "frame_bytes": frame_bytes,
            "seconds": args.seconds,
            "modes": modes,
            "points": [],
        }
        for run in range(args.repeat):
            for n in points:
                entry = {"viewers": n, "run": run, **point(frames, logs, n, args.seconds, modes)}
                results["points"].append(entry)
                log.info(
                    "%4d viewers, run %d: %s",
                    n,
                    run + 1,
                    "; ".join(
                        f"{m} p5 {entry[m]['fps_p5']} fps, {entry[m]['server_us_per_frame']} us/frame"
                        + (f" (x{entry[m]['ratio']})" if m != "reference" else "")
                        for m in ("reference", *modes)
                    ),
                )
        results["points"].sort(key=lambda e: (e["viewers"], e["run"]))
        if not args.no_scenarios:
            results["stalled"] = stalled_scenario(frames, logs, args.seconds)
            log.info("never-readers: %s", json.dumps(results["stalled"]))
            results["idle"] = idle_scenario(frames, logs, 10.0)
            log.info("idle: %s", json.dumps(results["idle"]))
    (out / "benchmarks.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(out, results)
    write_report(out, results, command)
    log.info("wrote %s", out / "benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
