"""Recording as a user meets it: ``--record`` on a real server process, the
files ffmpeg plays, a crash, and ``/recordings`` over HTTP."""

from __future__ import annotations

import io
import itertools
import json
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from harness.colours import COLOURS, nearest_colour, write_colour_frames
from recording.mkv import read_index
from tests.conftest import assert_one_line_error, run_cli
from tests.media import centre_colours, packet_times, require_ffmpeg

FPS = 10


@pytest.fixture(scope="module", autouse=True)
def ffmpeg_present() -> None:
    require_ffmpeg()


def recorder_args(frames: Path, folder: Path, *extra: str) -> list[str]:
    return [
        "--camera",
        f"yard=files:{frames}",
        "--fps",
        str(FPS),
        "--idle-timeout",
        "0.5",
        "--record",
        str(folder),
        "--record-segment",
        "2",
        *extra,
    ]


def status(server) -> dict:
    code, _, body = server.get("/status")
    assert code == 200
    return json.loads(body)


def wait_for(condition, timeout_s: float = 20.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)  # polling the server with a deadline
    raise AssertionError(f"timed out waiting for {what}")


def finished(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.mkv"))


def decoded_colours(path: Path, size: tuple[int, int] = (160, 120)) -> list[int]:
    """The colour index of every frame ffmpeg decodes from ``path``."""
    return [nearest_colour(rgb) for rgb in centre_colours(path, size)]


def assert_recorded_as_taken(path: Path) -> int:
    """Every frame of ``path`` is the next colour of the files camera, 1/FPS apart."""
    colours = decoded_colours(path)
    assert colours, path
    assert all((b - a) % len(COLOURS) == 1 for a, b in itertools.pairwise(colours)), colours
    times = packet_times(path)
    assert len(times) == len(colours)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(abs(gap - 1 / FPS) < 0.05 for gap in gaps), gaps
    return len(colours)


@pytest.mark.slow
@pytest.mark.alone  # frames 1/FPS apart, to 50 ms
def test_records_without_viewers_in_playable_segments(tmp_path: Path, start_server) -> None:
    frames = write_colour_frames(tmp_path / "frames")
    folder = tmp_path / "rec"
    server = start_server(*recorder_args(frames, folder))
    # Nobody watches, yet the camera runs on past its idle timeout (0.5 s) and records.
    wait_for(lambda: len(finished(folder / "yard")) >= 2, what="two finished segments")
    state = status(server)
    assert state["running"] and state["subscribers"] == 0
    assert state["recording"]["frames_recorded"] >= 2 * FPS
    assert state["recording"]["error"] is None
    first, second = finished(folder / "yard")[:2]
    assert assert_recorded_as_taken(first) >= 1
    assert assert_recorded_as_taken(second) == 2 * FPS  # a whole segment: 2 s at 10 fps
    # A clean stop finishes the segment being written: no part is left.
    assert server.stop() == 0
    assert not list((folder / "yard").glob("*.part"))
    for path in finished(folder / "yard"):
        assert_recorded_as_taken(path)
        assert read_index(path).finished
    text = server.log_text()
    assert "yard: recording to" in text and "yard: recording stopped" in text


@pytest.mark.slow
@pytest.mark.alone  # frames 1/FPS apart, to 50 ms
def test_a_crash_loses_at_most_the_last_second(tmp_path: Path, start_server) -> None:
    frames = write_colour_frames(tmp_path / "frames")
    folder = tmp_path / "rec"
    # Segments of an hour: a segment ending during these seconds is unlikely (and allowed for below).
    server = start_server(*recorder_args(frames, folder, "--record-segment", "3600"))
    camera_folder = folder / "yard"
    # Wait until the part holds complete Clusters (a second each), then kill -9.
    wait_for(lambda: status(server)["recording"]["frames_recorded"] >= 3 * FPS, what="3 s recorded")
    recorded = status(server)["recording"]["frames_recorded"]
    [part] = list(camera_folder.glob("*.mkv.part"))
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    kept = read_index(part).frame_count  # what the crash left, readable as it is
    # A segment may have ended on the hour meanwhile: its frames are not the part's.
    before = sum(read_index(p).frame_count for p in camera_folder.glob("*.mkv"))
    assert kept >= recorded - before - 2 * FPS  # at most the Cluster being gathered, and the frames since
    # The next start finishes it: a complete, playable file with every kept frame.
    server.start()
    wait_for(lambda: "left by a crash" in server.log_text(), what="the recovery")
    recovered = camera_folder / part.name.removesuffix(".part")
    assert recovered.exists() and not part.exists()
    assert assert_recorded_as_taken(recovered) == kept
    assert read_index(recovered).finished


@pytest.mark.slow
def test_recordings_over_http(tmp_path: Path, start_server) -> None:
    frames = write_colour_frames(tmp_path / "frames")
    folder = tmp_path / "rec"
    config = tmp_path / "cameras.toml"  # a camera that does not record, beside one that does
    config.write_text(f'[cameras.plain]\ndriver = "files"\nsource = "{frames}"\nrecord = false\n')
    server = start_server(*recorder_args(frames, folder), "--config", str(config))
    wait_for(lambda: finished(folder / "yard"), what="a finished segment")
    # index.json: every camera, the recorded one's segments oldest first.
    code, headers, body = server.get("/recordings/index.json")
    assert code == 200 and headers["Content-Type"] == "application/json"
    listing = json.loads(body)["cameras"]
    assert set(listing) == {"yard", "plain"}
    assert listing["plain"] == {"recording": False, "segments": []}
    segments = listing["yard"]["segments"]
    done = [s for s in segments if not s["recording"]]
    assert done and segments[-1]["recording"]  # the newest is being written
    segment = done[0]
    path = folder / "yard" / (segment["name"] + ".mkv")
    assert segment["size"] == path.stat().st_size
    assert segment["length_s"] == pytest.approx(read_index(path).length_ms() / 1000, abs=0.002)
    # The page lists the same segments, with play and download links.
    code, _, page = server.get("/recordings/")
    assert code == 200
    for s in segments:
        assert f'href="yard/{s["name"]}"'.encode() in page
        assert f'href="yard/{s["name"]}.mkv" download'.encode() in page
    assert b"Not recorded" in page  # the camera "plain"
    assert server.get("/recordings")[0] == 200  # redirected to recordings/
    # The index: each frame's time, and where its JPEG lies in the file.
    code, _, body = server.get(f"/recordings/yard/{segment['name']}.json")
    assert code == 200
    index = json.loads(body)
    expected = read_index(path)
    assert index["t"] == [t for t, _, _ in expected.frames]
    assert index["offset"] == [o for _, o, _ in expected.frames]
    assert (index["width"], index["height"], index["recording"]) == (160, 120, False)
    # The file, whole and by range: a frame's bytes decode to the camera's picture.
    code, headers, body = server.get(f"/recordings/yard/{segment['name']}.mkv")
    assert code == 200 and body == path.read_bytes()
    assert headers["Content-Type"] == "video/x-matroska"
    assert headers["Content-Disposition"] == f'attachment; filename="yard-{segment["name"]}.mkv"'
    # The fourth frame, or the last of a first segment cut short by the segments' clock.
    k = min(3, len(index["offset"]) - 1)
    offset, size = index["offset"][k], index["size"][k]
    request = urllib.request.Request(
        f"{server.url}recordings/yard/{segment['name']}.mkv",
        headers={"Range": f"bytes={offset}-{offset + size - 1}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 206
        jpeg = response.read()
    with Image.open(io.BytesIO(jpeg)) as picture:
        assert picture.size == (160, 120)
        first_colour = decoded_colours(path)[k]
        assert nearest_colour(picture.convert("RGB").getpixel((80, 60))) == first_colour
    # The segment being written answers too (its complete seconds).
    live = segments[-1]["name"]
    assert server.get(f"/recordings/yard/{live}.mkv")[0] == 200
    assert server.get(f"/recordings/yard/{live}.json")[0] == 200
    assert server.get(f"/recordings/yard/{live}")[0] == 200
    # Unknown, malformed and hostile names: 404, one short line, never a file outside.
    for bad in [
        "/recordings/nope/20260101T000000Z",
        "/recordings/plain/20260101T000000Z.mkv",
        "/recordings/yard/20260101T000000Z.mkv",
        "/recordings/yard/20260101T000000Z.json",
        "/recordings/yard/20260101T000000Z",
        "/recordings/yard/..%2f..%2fframes%2f01.jpg",
        "/recordings/yard/%2e%2e/%2e%2e/c.toml",
        "/recordings/yard/notes.txt",
        "/recordings/yard/" + segment["name"] + ".mkv.part",
    ]:
        code, headers, body = server.get(bad)
        assert code == 404, bad
        assert len(body) < 200 and b"<html" not in body.lower(), bad
    # A file in the folder that is not a recording: a clear 422, not a 500.
    (folder / "yard" / "20200101T000000Z.mkv").write_bytes(b"not a recording")
    code, _, body = server.get("/recordings/yard/20200101T000000Z.json")
    assert code == 422 and b"cannot read this recording" in body
    assert server.get("/recordings/")[0] == 200


@pytest.mark.slow
def test_metrics_count_the_recording(tmp_path: Path, start_server) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    frames = write_colour_frames(tmp_path / "frames")
    server = start_server(*recorder_args(frames, tmp_path / "rec"))
    wait_for(lambda: finished(tmp_path / "rec" / "yard"), what="a finished segment")

    def scrape() -> dict[str, float]:
        _, _, body = server.get("/metrics")
        return {
            s.name: s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
            if s.labels.get("camera") == "yard"
        }

    # A segment counts once its rename is durable (the folder synced): just after the file shows.
    samples = wait_for(
        lambda: (found := scrape()).get("camstream_segments_recorded_total", 0) >= 1 and found,
        what="the finished segment counted",
    )
    assert samples["camstream_frames_recorded_total"] >= 1
    assert samples["camstream_segments_recorded_total"] >= 1
    assert samples["camstream_bytes_recorded_total"] > 0
    assert samples["camstream_frames_not_recorded_total"] == 0
    assert samples["camstream_recording_writing"] == 1


@pytest.mark.slow
def test_config_records_per_camera(tmp_path: Path, start_server) -> None:
    frames = write_colour_frames(tmp_path / "frames")
    config = tmp_path / "cameras.toml"
    config.write_text(
        f"""
[cameras.front]
driver = "files"
source = "{frames}"
record = "{tmp_path / "front-recordings"}"
record_segment = 2
record_max_size = "1M"

[cameras.back]
driver = "files"
source = "{frames}"
"""
    )
    server = start_server("--config", str(config), "--fps", str(FPS))
    wait_for(lambda: finished(tmp_path / "front-recordings" / "front"), what="front's first segment")
    state = status(server)["cameras"]
    assert state["front"]["recording"]["directory"] == str(tmp_path / "front-recordings" / "front")
    assert "recording" not in state["back"]  # a camera without an output has no entry for it


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--record-max-size", "lots"], "'lots' is not a size"),
        (["--record-max-age=-1d"], "is not an age"),
        (["--record-segment", "0"], "out of range"),
        (["--record", ""], "give a folder"),
    ],
)
def test_bad_recording_options(args: list[str], message: str) -> None:
    assert_one_line_error(run_cli(*args), message)


@pytest.mark.slow
def test_a_folder_that_cannot_be_used_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli("--port", "0", "--record", str(blocker))
    assert_one_line_error(result, "camera 'emulated': cannot record in")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("record = 5", "record must be a folder, true or false"),
        ("record = true", "record = true needs --record DIR"),
        ('record = "/tmp/x"\nrecord_segment = 0', "record_segment 0 is out of range (1-86400)"),
        ('record = "/tmp/x"\nrecord_max_size = "x"', "is not a size"),
        ('record = "/tmp/x"\nrecord_max_age = 1', "out of range"),
        ("recording = true", "unknown setting 'recording'"),
    ],
)
def test_bad_recording_config(tmp_path: Path, table: str, message: str) -> None:
    config = tmp_path / "cameras.toml"
    config.write_text(f'[cameras.front]\ndriver = "emulated"\n{table}\n')
    assert_one_line_error(run_cli("--config", str(config)), message)
