"""cameras/mkv.py: the files it writes play in ffmpeg with the right timing, and
survive being cut short."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from harness.colours import COLOURS, jpeg, nearest_colour
from recording import mkv
from recording.mkv import MkvError, MkvWriter, read_index, recover
from tests.media import centre_colours, packet_times, probe, require_ffmpeg

START = 1_795_000_000.25


@pytest.fixture(scope="module", autouse=True)
def ffmpeg_present() -> None:
    require_ffmpeg()


def write_file(path: Path, times_ms: list[int], size: tuple[int, int] = (64, 48)) -> list[bytes]:
    frames = [jpeg(COLOURS[i % len(COLOURS)], size) for i in range(len(times_ms))]
    writer = MkvWriter(path, width=size[0], height=size[1], fps=10, start_time=START)
    for data, t in zip(frames, times_ms, strict=True):
        writer.add(data, t)
    writer.close()
    return frames


def test_ffmpeg_plays_every_frame_at_its_time(tmp_path: Path) -> None:
    # Irregular intervals (a camera's real pace): each frame keeps its own time.
    times = [0, 100, 210, 300, 450, 460, 1000, 1033, 2500, 2600, 4100, 4101, 4200]
    path = tmp_path / "a.mkv"
    frames = write_file(path, times)
    info = probe(path, "stream=codec_name,width,height", "format=duration,format_name")
    assert info["streams"] == [{"codec_name": "mjpeg", "width": 64, "height": 48}]
    assert "matroska" in info["format"]["format_name"]
    assert float(info["format"]["duration"]) == pytest.approx(4.3, abs=0.01)  # last frame + 1/fps
    assert packet_times(path) == pytest.approx([t / 1000 for t in times], abs=0.0005)
    colours = centre_colours(path, (64, 48))
    assert [nearest_colour(c) for c in colours] == [i % len(COLOURS) for i in range(len(times))]
    # The bytes are the camera's JPEGs, untouched.
    index = read_index(path)
    data = path.read_bytes()
    assert [data[off : off + n] for _, off, n in index.frames] == frames
    assert [t for t, _, _ in index.frames] == times
    assert (index.width, index.height, index.finished) == (64, 48, True)
    assert index.start_time == pytest.approx(START, abs=1e-6)


@pytest.mark.slow
def test_long_file_has_clusters_cues_and_seeks(tmp_path: Path) -> None:
    times = [i * 100 for i in range(200)]  # 20 s at 10 fps: 20 Clusters
    path = tmp_path / "long.mkv"
    write_file(path, times)
    index = read_index(path)
    assert len(index.clusters) == 20
    assert index.duration_ms == pytest.approx(20000)
    # ffmpeg seeks with the Cues: the first frame at or after 12.3 s is frame 123.
    out = tmp_path / "seek.png"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-ss", "12.3", "-i", str(path), "-frames:v", "1", "-y", str(out)],
        check=True,
        timeout=60,
    )
    with Image.open(out) as picture:
        assert nearest_colour(picture.convert("RGB").getpixel((32, 24))) == 123 % len(COLOURS)
    cues = probe(path, "format_tags")  # the file opens with no warning about missing parts
    assert "format" in cues


def test_times_going_back_are_clamped(tmp_path: Path) -> None:
    path = tmp_path / "back.mkv"
    write_file(path, [0, 100, 50, 200])
    assert [t for t, _, _ in read_index(path).frames] == [0, 100, 100, 200]
    assert packet_times(path) == pytest.approx([0, 0.1, 0.1, 0.2], abs=0.0005)


def test_a_long_gap_starts_a_new_cluster(tmp_path: Path) -> None:
    # A block's time is 16 bits from its Cluster's: a 40 s gap must not overflow.
    path = tmp_path / "gap.mkv"
    write_file(path, [0, 40_000, 40_100])
    assert packet_times(path) == pytest.approx([0, 40, 40.1], abs=0.0005)


def test_a_file_cut_anywhere_is_recovered_to_its_complete_clusters(tmp_path: Path) -> None:
    times = [i * 100 for i in range(45)]  # Clusters of 10 frames: 0-0.9 s, 1-1.9 s, ...
    whole = tmp_path / "whole.mkv"
    writer = MkvWriter(whole, width=64, height=48, fps=10, start_time=START)
    ends = []
    for i, t in enumerate(times):
        writer.add(jpeg(COLOURS[i % len(COLOURS)], (64, 48)), t)
        if i % 10 == 9:
            writer.flush_cluster()
            ends.append(writer.bytes_written)
    writer.flush_cluster()  # what a crash leaves: complete Clusters, no Cues, no sizes
    writer.abandon()
    data = whole.read_bytes()
    cuts = [(ends[0] - 1, 0), (ends[0], 10), (ends[1] + 7, 20), (ends[3] + 1000, 40), (len(data), 45)]
    for cut, kept in cuts:
        part = tmp_path / f"cut-{cut}.mkv.part"
        part.write_bytes(data[:cut])
        if kept == 0:
            with pytest.raises(MkvError, match="no complete frame"):
                recover(part)
            continue
        # Playable as it is, before recovery...
        assert len(centre_colours(part, (64, 48))) >= kept
        index = recover(part)
        assert index.finished and index.frame_count == kept
        # ...and after: a finished file with its Duration, every frame decodes.
        colours = centre_colours(part, (64, 48))
        assert [nearest_colour(c) for c in colours] == [i % len(COLOURS) for i in range(kept)]
        info = probe(part, "format=duration")
        assert float(info["format"]["duration"]) == pytest.approx(kept / 10, abs=0.11)
        assert recover(part).frame_count == kept  # idempotent


@pytest.mark.slow
def test_reads_a_file_that_ffmpeg_remuxed(tmp_path: Path) -> None:
    path = tmp_path / "ours.mkv"
    frames = write_file(path, [i * 100 for i in range(30)])
    theirs = tmp_path / "theirs.mkv"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-c", "copy", "-y", str(theirs)], check=True, timeout=60
    )
    index = read_index(theirs)
    data = theirs.read_bytes()
    assert [data[off : off + n] for _, off, n in index.frames] == frames
    assert [t for t, _, _ in index.frames] == [i * 100 for i in range(30)]


@pytest.mark.parametrize(
    "content",
    [b"", b"not a matroska file at all", b"\x1a\x45\xdf\xa3\x84webm", jpeg((1, 2, 3), (16, 16))],
    ids=["empty", "text", "cut-header", "jpeg"],
)
def test_garbage_is_refused_clearly(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.mkv"
    path.write_bytes(content)
    with pytest.raises(MkvError):
        read_index(path)


@pytest.mark.slow
def test_a_matroska_file_without_jpeg_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "png.mkv"
    source = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (9, 9, 9)).save(source)
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(source), "-c:v", "png", "-y", str(path)], check=True, timeout=60
    )
    with pytest.raises(MkvError, match="V_MJPEG"):
        read_index(path)


def test_segment_names_sort_by_time() -> None:
    assert mkv.format_start(START) == "20261118T110640Z"
    names = [mkv.format_start(START + d) for d in (0, 59, 3600, 86400 * 40)]
    assert names == sorted(names)


def test_a_big_frame_takes_a_wider_size_field(tmp_path: Path) -> None:
    # 3 MB JPEGs of noise: the block sizes take 4 bytes; all still readable.
    noise = Image.frombytes("RGB", (1200, 900), os.urandom(1200 * 900 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, "JPEG", quality=100)
    big = buffer.getvalue()
    path = tmp_path / "big.mkv"
    writer = MkvWriter(path, width=1200, height=900, fps=5, start_time=START)
    for i in range(3):
        writer.add(big, i * 200)
    writer.close()
    index = read_index(path)
    assert [n for _, _, n in index.frames] == [len(big)] * 3
    assert packet_times(path) == pytest.approx([0, 0.2, 0.4], abs=0.0005)
