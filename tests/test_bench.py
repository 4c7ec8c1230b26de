"""The benchmark's tools still work: the load generator against a server process (MJPEG and
WebSocket, with never-readers) and against the bare reference.  Only correctness is checked
here; the figures belong to ``bench/fanout.py``'s report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.colours import write_colour_frames
from tests.camera_polling import wait_for
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

#: Solid-colour JPEGs of this size are about 40 KB, as the benchmark's frames.
BENCH_FRAME_SIZE = (2048, 1280)


def load(url: str, *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "load.py"), "--url", url, "--seconds", "1", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def bench_frames(tmp_path_factory) -> Path:
    folder = write_colour_frames(tmp_path_factory.mktemp("bench-frames"), size=BENCH_FRAME_SIZE)
    sizes = [len(p.read_bytes()) for p in folder.iterdir()]
    assert all(30_000 < size < 50_000 for size in sizes)  # "about 40 KB", as the benchmark's frames
    return folder


@pytest.mark.parametrize("path", ["ws", "stream.mjpg"])
def test_the_load_generator_counts_every_frame(start_server, bench_frames, path):
    server = start_server("--camera", "files", "--source", str(bench_frames), "--fps", "20")
    scheme = "ws" if path == "ws" else "http"
    url = f"{scheme}://127.0.0.1:{server.port}/{path}"
    report = load(url, "--viewers", "3", "--server-pid", str(server.proc.pid))
    assert report["errors"] == 0 and report["duplicates"] == 0, report
    assert report["frames"] > 3 and report["fps_p5"] > 0
    assert report["latency_ms"]["median"] >= 0
    assert report["server_us_per_frame"] > 0 and report["server_rss_kb"] > 0


def test_never_readers_are_measured_once_the_server_skips_them(start_server, bench_frames):
    server = start_server("--camera", "files", "--source", str(bench_frames), "--fps", "30")
    report = load(
        f"http://127.0.0.1:{server.port}/stream.mjpg",
        *("--viewers", "2", "--stalled", "3", "--server-pid", str(server.proc.pid)),
    )
    assert report["errors"] == 0 and report["before_stalled"]["errors"] == 0
    assert report["server_frames_skipped"] > 0  # the never-readers were being skipped


def test_the_reference_serves_the_same_framing(bench_frames, tmp_path):
    log_path = tmp_path / "reference.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "reference.py"), "--source", str(bench_frames)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "listening on" in log_path.read_text(), timeout_s=20, what="listening", poll_s=0.05)
        port = int(log_path.read_text().split("127.0.0.1:")[1].split()[0])
        report = load(f"http://127.0.0.1:{port}/stream.mjpg", "--viewers", "2", "--server-pid", str(proc.pid))
        assert report["errors"] == 0 and report["duplicates"] == 0 and report["frames"] > 2, report
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_slow_viewers_benchmark_keeps_them_and_the_servers_memory_within_its_bound(tmp_path):
    result = subprocess.run(
        [
            *(sys.executable, str(ROOT / "bench" / "slow_viewers.py"), "--viewers", "30"),
            *("--seconds", "2", "--baseline", "1", "--out", str(tmp_path)),
            *("--json", str(tmp_path / "slow_viewers.json")),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "slow_viewers.json").read_text())
    assert report["viewers_at_the_server"] == {"mjpeg": 30}
    assert report["slow"]["still_connected"] == 30 and report["slow"]["bytes_read_per_second_median"] > 0
    assert report["server"]["frames_skipped"] > 0  # the slow viewers were skipped, not queued for
    assert report["server"]["viewers_stalled"] == 0
    assert report["beside"]["errors"] == 0 and report["beside"]["fps_median"] > 0
    assert report["rss_kb"]["before"] <= report["rss_kb"]["peak"] <= report["rss_kb"]["bound"]
    assert report["within_bound"] and report["rss_series"]
    # What the kernel holds for them stays near TCP_NOTSENT_LOWAT each (its send buffer
    # alone grows to 4 MB a slow viewer).
    assert report["kernel_send_queues_kb"]["peak"] <= 30 * 256, report["kernel_send_queues_kb"]
    assert "| the bound |" in (tmp_path / "slow_viewers.md").read_text()
