"""The variants benchmark: a viewer behind a slow link, full size against adaptive, and what
a variant costs the server.

    .venv/bin/python bench/adapt.py                          # everything, about 8 minutes (root)
    .venv/bin/python bench/adapt.py --parts link --sizes 1280x720 --warmup 10 --seconds 10
    .venv/bin/python bench/adapt.py --json /tmp/adapt.json

Four parts (``--parts``, all by default), each against fresh ``server.py`` processes with the
``emulated`` camera at 30 fps, JPEG quality 80:

``link``
    A viewer behind a real ``--rate`` (2 mbit/s) link: ``harness/netns.py`` makes a veth pair
    into a network namespace shaped by ``tc ... tbf``; the server listens on the root side,
    ``harness/link_client.py`` reads in the namespace.  Per camera size (``--sizes``) and mode
    (full size ``?adapt=0``; adaptive, the WebSocket's default): frames shown per second,
    frame age (capture to last byte) median and p95, bytes per second, after ``--warmup``
    seconds, over ``--seconds``; and the variant it settled on, when (its last variant
    message), and variant changes within the measured window.
``cpu``
    The cost of one variant at 30 fps: the server process's CPU (utime + stime from
    ``/proc/PID/stat``) over ``--cpu-seconds`` with one loopback viewer of half width
    (``?width=W/2&adapt=0``), minus with one full-size viewer (``?adapt=0``), each in a fresh
    server, ``--repeat`` times alternating; the server pinned to CPU 0, the viewer to CPU 1.
    Also the variant's own ``encode_cpu_seconds`` from ``/status`` over the same window.
``bytes``
    From the same runs: bytes per second of the half-width viewer against the full-size one.
``fanout``
    ``--viewers`` (100) WebSocket viewers of one variant (``?width=320&adapt=0``, loopback,
    ``bench/load.py``): ``frames_encoded`` of that variant against ``frames_captured`` of the
    camera over ``--cpu-seconds`` (one encode per frame: a ratio of 1, not 100).

Prints a Markdown table per part; ``--json FILE`` writes every figure.  Every process it
starts (servers, clients) is ended by its PID, and the namespace it made is removed, also on
Ctrl-C or an error.  ``link`` needs root (ip netns, tc); the other parts do not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fanout import machine  # noqa: E402
from harness import link_client  # noqa: E402
from harness.netns import ShapedLink  # noqa: E402
from harness.process import ServerProcess, pin, stop_process  # noqa: E402

log = logging.getLogger("bench.adapt")

SERVER_CPU = 0
CLIENT_CPU = 1
TICKS = os.sysconf("SC_CLK_TCK")


# -- processes ------------------------------------------------------------------------
def camera_args(size: str, fps: int = 30, picture: str = "emulated", logs: Path | None = None) -> list[str]:
    """The server's camera: the emulated test card, or (``picture="photo"``) the files
    camera over photo-like frames made in ``logs``."""
    width, height = size.split("x")
    if picture == "photo":
        assert logs is not None
        folder = photo_frames((int(width), int(height)), logs / f"photo-{size}")
        return ["--camera", "files", "--source", str(folder), "--fps", str(fps)]
    return ["--camera", "emulated", "--width", width, "--height", height, "--fps", str(fps)]


def photo_frames(size: tuple[int, int], folder: Path, count: int = 30) -> Path:
    """``count`` JPEGs (quality 80) with what a camera's pictures have and the test card
    lacks: detail at every scale and sensor noise (a Mandelbrot set, drifting, under
    Gaussian noise).  Made once per folder."""
    from PIL import Image

    if folder.is_dir():
        return folder
    folder.mkdir(parents=True)
    width, height = size
    for i in range(count):
        x = -0.7453 + 0.0004 * i
        detail = Image.effect_mandelbrot(
            size, (x - 0.01, 0.105, x + 0.01, 0.105 + 0.02 * height / width), 120
        )
        noise = Image.effect_noise(size, 24)
        picture = Image.merge("RGB", (detail, Image.blend(detail, noise, 0.3), noise.point(lambda v: v // 2)))
        picture.save(folder / f"{i:03d}.jpg", quality=80)
    return folder


def cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` (every thread), seconds, from ``/proc/PID/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def encode_cpu(variant: dict[str, Any]) -> float:
    """A variant's encode CPU seconds from /status (``encode_cpu_seconds``; ``encode_cpu_s``
    in the first drafts)."""
    return float(variant.get("encode_cpu_seconds", variant.get("encode_cpu_s", 0.0)))


def status(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.url}status", timeout=10) as reply:
        return json.load(reply)


@contextlib.contextmanager
def running_server(args: list[str], logs: Path, host: str | None = None) -> Iterator[ServerProcess]:
    """A fresh server process (loopback, or ``host``), stopped by its PID on the way out."""
    folder = Path(tempfile.mkdtemp(prefix="server-", dir=logs))
    args = [*args, "--max-clients", "1000"]  # INFO: the start-up line names the port
    server = ServerProcess(args, folder / "server", host=host or "127.0.0.1")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Client(link_client.ClientProcess):
    """harness/link_client.py (in ``link``'s namespace, or here pinned to CPU 1), its summary
    on a file, its per-second progress on another; ended by its PID."""

    def __init__(self, url: str, seconds: float, warmup: float, logs: Path, link: ShapedLink | None) -> None:
        folder = Path(tempfile.mkdtemp(prefix="client-", dir=logs))
        options = ["--seconds", str(seconds), "--warmup", str(warmup), "--hello"]
        super().__init__(url, options, folder, link.spawn if link is not None else subprocess.Popen)
        if link is None:
            pin(self.proc.pid, CLIENT_CPU)

    def wait_frames(self, timeout_s: float = 20.0) -> None:
        """Block until the client has written a second with frames in it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            lines = self.seconds()
            if lines and lines[-1]["total_frames"] > 0:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"client exited: {self.err_path.read_text()[-2000:]}")
            time.sleep(0.1)  # polling the progress file with a deadline
        raise TimeoutError(f"no frames within {timeout_s} s")


# -- a: the link -------------------------------------------------------------------------
def link_runs(args: argparse.Namespace, logs: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Part a, appending to ``rows`` as each run ends (so an interrupted run keeps them)."""
    with ShapedLink(rate=args.rate, burst=args.burst, latency=args.latency) as link:
        for size in args.sizes:
            for mode, query in (("full size", "?adapt=0"), ("adaptive", "")):
                with running_server(camera_args(size), logs, link.host_address) as server:
                    url = f"ws://{link.host_address}:{server.port}/ws{query}"
                    client = Client(url, args.warmup + args.seconds, args.warmup, logs, link)
                    try:
                        summary = client.summary(args.warmup + args.seconds + 30)
                    finally:
                        client.stop()
                variants = summary["variants"]
                last = variants[-1] if variants else None
                row = {
                    "size": size,
                    "mode": mode,
                    "rate": args.rate,
                    "fps": summary["fps"],
                    "age_ms": summary["age_ms"],
                    "kbit_per_s": summary["kbit_per_s"],
                    "bytes_per_s": summary["bytes_per_s"],
                    "mean_frame_bytes": summary["mean_frame_bytes"],
                    "sizes": summary["sizes"],
                    "variant": last["variant"] if last else "source",
                    "settled_s": last["s"] if last else None,
                    "stepped_down_s": variants[0]["s"] if variants else None,
                    "changes_in_window": sum(1 for v in variants if v["s"] >= args.warmup),
                    "variant_messages": variants,
                    "error": summary["error"],
                }
                rows.append(row)
                log.info(
                    "%s %s: %.1f fps, age p50 %s p95 %s ms, %s kbit/s, %s",
                    size,
                    mode,
                    row["fps"],
                    row["age_ms"]["median"],
                    row["age_ms"]["p95"],
                    row["kbit_per_s"],
                    row["variant"],
                )
    return rows


# -- b, c: one variant's cost, and its bytes --------------------------------------------
def measure_one(
    size: str, query: str, seconds: float, logs: Path, picture: str = "emulated"
) -> dict[str, Any]:
    """One loopback viewer of ``query`` on a fresh server pinned to CPU 0: the server's CPU
    (% of a core) over ``seconds`` once frames flow, the variants' encode CPU and frames."""
    with running_server(camera_args(size, picture=picture, logs=logs), logs) as server:
        pin(server.proc.pid, SERVER_CPU)
        url = f"ws://127.0.0.1:{server.port}/ws{query}"
        client = Client(url, seconds + 20, 0, logs, None)
        try:
            client.wait_frames()
            time.sleep(2.0)  # a settling period before the measured window, not a synchronisation
            pin(server.proc.pid, SERVER_CPU)  # threads started since (the variant's encoder)
            before, cpu0, t0 = status(server), cpu_s(server.proc.pid), time.monotonic()
            time.sleep(seconds)  # the measured window itself
            after, cpu1, t1 = status(server), cpu_s(server.proc.pid), time.monotonic()
        finally:
            client.stop()
        summary = client.summary(5)
    elapsed = t1 - t0
    encode = encoded = 0.0
    for label, variant in after["variants"]["sizes"].items():
        previous = before["variants"]["sizes"].get(label, {})
        encode += encode_cpu(variant) - encode_cpu(previous)
        encoded += variant.get("frames_encoded", 0) - previous.get("frames_encoded", 0)
    return {
        "size": size,
        "query": query,
        "server_cpu_percent": round(100 * (cpu1 - cpu0) / elapsed, 2),
        "encode_cpu_percent": round(100 * encode / elapsed, 2),
        "frames_encoded_per_s": round(encoded / elapsed, 2),
        "frames_captured_per_s": round((after["frames_captured"] - before["frames_captured"]) / elapsed, 2),
        "client_fps": summary["fps"],
        "bytes_per_s": summary["bytes_per_s"],
        "frame": summary["size"],
    }


def cpu_runs(args: argparse.Namespace, logs: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Parts b and c, appending one row per camera size and picture to ``rows``."""
    for size, picture in ((size, picture) for picture in args.pictures for size in args.sizes):
        half = int(size.split("x")[0]) // 2
        runs: dict[str, list[dict]] = {"full": [], "half": []}
        for rep in range(args.repeat):
            order = [("full", "?adapt=0"), ("half", f"?width={half}&adapt=0")]
            for name, query in order if rep % 2 == 0 else order[::-1]:
                runs[name].append(measure_one(size, query, args.cpu_seconds, logs, picture))
                log.info("%s %s %s run %d: %s", size, picture, name, rep + 1, json.dumps(runs[name][-1]))

        def med(name: str, key: str, runs: dict[str, list[dict]] = runs) -> float:
            return statistics.median(r[key] for r in runs[name])

        diffs = [
            h["server_cpu_percent"] - f["server_cpu_percent"]
            for f, h in zip(runs["full"], runs["half"], strict=True)
        ]
        rows.append(
            {
                "size": size,
                "picture": picture,
                "variant": runs["half"][0]["frame"],
                "server_cpu_full": med("full", "server_cpu_percent"),
                "server_cpu_half": med("half", "server_cpu_percent"),
                "variant_cost_percent": round(statistics.median(diffs), 2),
                "variant_cost_runs": [round(d, 2) for d in diffs],
                "encode_cpu_percent": med("half", "encode_cpu_percent"),
                "frames_encoded_per_s": med("half", "frames_encoded_per_s"),
                "bytes_full": med("full", "bytes_per_s"),
                "bytes_half": med("half", "bytes_per_s"),
                "bytes_ratio": round(med("half", "bytes_per_s") / med("full", "bytes_per_s"), 3),
                "fps_full": med("full", "client_fps"),
                "fps_half": med("half", "client_fps"),
                "runs": runs,
            }
        )
    return rows


# -- d: many viewers, one encode -------------------------------------------------------
def fanout_run(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    query = "?width=320&adapt=0"
    with running_server(camera_args("640x480"), logs) as server:
        pin(server.proc.pid, SERVER_CPU)
        cmd = [
            *(sys.executable, str(ROOT / "bench" / "load.py")),
            *("--url", f"ws://127.0.0.1:{server.port}/ws{query}", "--viewers", str(args.viewers)),
            *("--seconds", str(args.cpu_seconds + 8), "--cpu", str(CLIENT_CPU)),
        ]
        load = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                variants = status(server)["variants"]["sizes"]
                if any(v["subscribers"] >= args.viewers for v in variants.values()):
                    break
                if load.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{args.viewers} viewers did not join: {variants}")
                time.sleep(0.2)  # polling /status with a deadline
            time.sleep(1.0)  # every viewer has its first frames before the window
            before, t0 = status(server), time.monotonic()
            time.sleep(args.cpu_seconds)  # the measured window itself
            after, t1 = status(server), time.monotonic()
            out, err = load.communicate(timeout=args.cpu_seconds + 60)
        finally:
            stop_process(load)
    if load.returncode != 0:
        raise RuntimeError(f"load.py failed: {err[-2000:]}")
    report = json.loads(out)
    label, variant = next((k, v) for k, v in after["variants"]["sizes"].items() if v["width"] == 320)
    encoded = variant["frames_encoded"] - before["variants"]["sizes"][label]["frames_encoded"]
    captured = after["frames_captured"] - before["frames_captured"]
    return {
        "viewers": args.viewers,
        "variant": label,
        "seconds": round(t1 - t0, 2),
        "frames_captured": captured,
        "frames_encoded": encoded,
        "ratio": round(encoded / captured, 3) if captured else None,
        "encode_cpu_percent": round(
            100 * (encode_cpu(variant) - encode_cpu(before["variants"]["sizes"][label])) / (t1 - t0), 2
        ),
        "subscribers": variant["subscribers"],
        "fps_median": report["fps_median"],
        "fps_p5": report["fps_p5"],
        "errors": report["errors"],
    }


# -- the report --------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def tables(results: dict[str, Any]) -> str:
    lines: list[str] = []
    if results.get("link"):
        lines += [
            f"### a. One viewer behind a {results['args']['rate']} link "
            f"(after {results['args']['warmup']:g} s, over {results['args']['seconds']:g} s)",
            "",
            "| camera | mode | fps | age p50 ms | age p95 ms | kbit/s | frame bytes | variant "
            "| first step down at s | last change at s | changes in window |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results["link"]:
            lines.append(
                f"| {r['size']} | {r['mode']} | {r['fps']:.1f} | {r['age_ms']['median']} | "
                f"{r['age_ms']['p95']} | {r['kbit_per_s']:.0f} | {r['mean_frame_bytes']} | {r['variant']} | "
                f"{'' if r['stepped_down_s'] is None else r['stepped_down_s']} "
                f"| {'' if r['settled_s'] is None else r['settled_s']} | {r['changes_in_window']} |"
            )
        lines.append("")
    if results.get("cpu"):
        lines += [
            "### b, c. One variant at 30 fps "
            f"(server CPU % of a core, median of {results['args']['repeat']} runs)",
            "",
            "| camera | picture | variant | server CPU, full-size viewer | with a variant viewer "
            "| variant cost | runs | encode CPU % | bytes/s full | bytes/s variant | ratio |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results["cpu"]:
            lines.append(
                f"| {r['size']} | {r.get('picture', 'emulated')} | {r['variant']} "
                f"| {r['server_cpu_full']:.1f} | {r['server_cpu_half']:.1f} "
                f"| {r['variant_cost_percent']:.1f} "
                f"| {', '.join(f'{d:.1f}' for d in r['variant_cost_runs'])} "
                f"| {r['encode_cpu_percent']:.1f} | {r['bytes_full']:.0f} | {r['bytes_half']:.0f} "
                f"| {r['bytes_ratio']:.2f} |"
            )
        lines.append("")
    if results.get("fanout"):
        f = results["fanout"]
        lines += [
            f"### d. {f['viewers']} viewers of one variant over {f['seconds']:g} s",
            "",
            "| variant | subscribers | frames captured | frames encoded | ratio | encode CPU % | fps p50 "
            "| fps p5 | errors |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {f['variant']} | {f['subscribers']} | {f['frames_captured']} | {f['frames_encoded']} "
            f"| {f['ratio']} | {f['encode_cpu_percent']} | {f['fps_median']} | {f['fps_p5']} "
            f"| {f['errors']} |",
            "",
        ]
    goals = goal_rows(results)
    if goals:
        lines += ["### Goals", "", "| | measured | goal | |", "|---|---|---|---|", *goals, ""]
    return "\n".join(lines)


def goal_rows(results: dict[str, Any]) -> list[str]:
    rows = []
    for r in results.get("link", []):
        if r["mode"] == "adaptive":
            p95 = r["age_ms"]["p95"] or 1e9
            ok = r["fps"] >= 20 and p95 <= 300
            rows.append(
                f"| {r['size']} adaptive on {r['rate']}: fps; age p95 | {r['fps']:.1f}; {p95} ms "
                f"| >= 20; <= 300 ms | {verdict(ok)} |"
            )
    for r in results.get("cpu", []):
        picture = r.get("picture", "emulated")
        if r["size"] == "640x480":
            cost = r["variant_cost_percent"]
            rows.append(
                f"| one 320x240 variant ({picture}): server CPU | {cost:.1f} % | <= 5 % "
                f"| {verdict(cost <= 5)} |"
            )
        ratio = r["bytes_ratio"]
        rows.append(
            f"| {r['variant']} viewer's bytes / full size ({r['size']}, {picture}) | {ratio:.2f} | <= 0.33 "
            f"| {verdict(ratio <= 1 / 3)} |"
        )
    f = results.get("fanout")
    if f and f["ratio"] is not None:
        rows.append(
            f"| {f['viewers']} viewers of one variant: frames encoded / captured | {f['ratio']} | ~1 "
            f"| {verdict(0.9 <= f['ratio'] <= 1.1)} |"
        )
    return rows


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="link,cpu,fanout", help="link, cpu (with bytes), fanout")
    parser.add_argument("--sizes", default="640x480,1280x720", help="camera sizes, WxH,...")
    parser.add_argument("--rate", default="2mbit", help="the link's rate (tc units; default 2mbit)")
    parser.add_argument("--burst", default="32kbit", help="the token bucket's burst (default 32kbit)")
    parser.add_argument("--latency", default="50ms", help="tbf's queue bound (default 50ms)")
    parser.add_argument("--warmup", type=float, default=15.0, help="link: seconds before measuring")
    parser.add_argument("--seconds", type=float, default=15.0, help="link: measured seconds")
    parser.add_argument("--cpu-seconds", type=float, default=10.0, help="cpu, fanout: measured seconds")
    parser.add_argument("--repeat", type=int, default=3, help="cpu: runs of each viewer")
    parser.add_argument(
        "--pictures", default="emulated,photo", help="cpu: the emulated test card and/or photo-like frames"
    )
    parser.add_argument("--viewers", type=int, default=100, help="fanout: viewers of the one variant")
    parser.add_argument("--json", metavar="FILE", help="write every figure here")
    args = parser.parse_args(argv)
    args.sizes = [s for s in args.sizes.split(",") if s]
    args.pictures = [p for p in args.pictures.split(",") if p]
    if set(args.pictures) - {"emulated", "photo"}:
        parser.error("--pictures: emulated and/or photo")
    parts = {p for p in args.parts.split(",") if p}
    unknown = parts - {"link", "cpu", "fanout"}
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    signal.signal(signal.SIGTERM, interrupted)  # the same clean-up as Ctrl-C
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    command = "bench/adapt.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results: dict[str, Any] = {
        "command": command.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "args": {k: v for k, v in vars(args).items() if k != "json"},
    }
    with tempfile.TemporaryDirectory(prefix="camstream-adapt-") as tmp:
        logs = Path(tmp)
        try:
            if "link" in parts:
                link_runs(args, logs, results.setdefault("link", []))
            if "cpu" in parts:
                cpu_runs(args, logs, results.setdefault("cpu", []))
            if "fanout" in parts:
                results["fanout"] = fanout_run(args, logs)
        except KeyboardInterrupt:
            log.warning("interrupted: the figures so far")
            failed = "interrupted"
        except Exception as exc:  # the figures so far are still written, then the error
            log.exception("failed")
            failed = f"{type(exc).__name__}: {exc}"
        else:
            failed = None
    results["error"] = failed
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    sys.stdout.write(tables(results) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
