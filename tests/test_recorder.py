"""cameras/recorder.py: segments, retention, crash recovery and write errors,
with real files checked by ffprobe."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import pytest

from frame import Frame
from harness.colours import COLOURS, jpeg
from recording.archive import Archive
from recording.mkv import MkvWriter, format_start, read_index
from recording.recorder import (
    PART_SUFFIX,
    Recorder,
    RecordSettings,
    SegmentInfo,
    describe,
)
from tests.media import packet_times, require_ffmpeg

#: A start a little after a multiple of 2 s (segments end on multiples of their length).
T0 = 1_795_000_000.5
PICTURES = [jpeg(colour, (64, 48)) for colour in COLOURS]


@pytest.fixture(scope="module", autouse=True)
def ffprobe_present() -> None:
    require_ffmpeg()


def frames(start: float, count: int, fps: float = 10, size: tuple[int, int] = (64, 48)) -> list[Frame]:
    pictures = PICTURES if size == (64, 48) else [jpeg(c, size) for c in COLOURS]
    return [
        Frame(pictures[i % len(pictures)], i + 1, start + i / fps, size[0], size[1]) for i in range(count)
    ]


def listed(folder: Path) -> list[SegmentInfo]:
    """The segments of one camera's folder, oldest first, as the archive lists them."""
    return [entry.info for entry in Archive({"cam": folder}).scan_blocking("cam")]


def record(recorder: Recorder, items: list[Frame]) -> None:
    recorder.start()
    for frame in items:
        recorder.put(frame)
    recorder.finish()


def test_segments_end_on_multiples_of_their_length(tmp_path: Path) -> None:
    recorder = Recorder("porch", RecordSettings(str(tmp_path), segment_s=2), fps=10)
    record(recorder, frames(T0, 50))  # 1795000000.5 to 1795000005.4
    files = sorted((tmp_path / "porch").iterdir())
    assert [p.name for p in files] == [
        format_start(T0) + ".mkv",
        format_start(1_795_000_002) + ".mkv",
        format_start(1_795_000_004) + ".mkv",
    ]
    counts = [15, 20, 15]
    for path, count in zip(files, counts, strict=True):
        times = packet_times(path)
        assert times == pytest.approx([i / 10 for i in range(count)], abs=0.0015)
    assert recorder.frames_recorded == 50
    assert recorder.segments_recorded == 3
    assert recorder.bytes_recorded == sum(p.stat().st_size for p in files)
    # The bytes are the camera's JPEGs, in order.
    data = files[1].read_bytes()
    index = read_index(files[1])
    assert [data[o : o + n] for _, o, n in index.frames] == [PICTURES[(15 + i) % 6] for i in range(20)]


def test_a_new_picture_size_starts_a_new_segment(tmp_path: Path) -> None:
    recorder = Recorder("cam", RecordSettings(str(tmp_path), segment_s=300), fps=10)
    items = frames(T0, 5) + frames(T0 + 0.5, 5, size=(32, 24))
    record(recorder, items)
    files = sorted((tmp_path / "cam").iterdir())
    assert len(files) == 2
    assert [(read_index(p).width, read_index(p).frame_count) for p in files] == [(64, 5), (32, 5)]
    assert files[1].name == format_start(T0 + 0.5) + ".mkv"


def test_two_segments_in_one_second_get_distinct_names(tmp_path: Path) -> None:
    recorder = Recorder("cam", RecordSettings(str(tmp_path)), fps=10)
    items = frames(T0, 2) + frames(T0 + 0.2, 2, size=(32, 24)) + frames(T0 + 0.4, 2)
    record(recorder, items)
    names = sorted(p.name for p in (tmp_path / "cam").iterdir())
    stem = format_start(T0)
    assert names == [f"{stem}-1.mkv", f"{stem}-2.mkv", f"{stem}.mkv"]
    assert [s.name for s in listed(tmp_path / "cam")] == [stem + "-1", stem + "-2", stem]


def test_the_part_being_written_is_listed_and_readable(tmp_path: Path) -> None:
    recorder = Recorder("cam", RecordSettings(str(tmp_path)), fps=10)
    recorder.start()
    try:
        for frame in frames(T0, 25):
            recorder.put(frame)
        deadline = time.monotonic() + 10
        while recorder.frames_recorded < 25 and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the writer thread's progress, with a deadline
        recorder._writer.flush_cluster()  # type: ignore[union-attr]  # what a second of time does
        [segment] = listed(tmp_path / "cam")
        assert segment.recording and segment.path.name.endswith(PART_SUFFIX)
        described = describe(segment)
        assert described.frames is not None and described.frames >= 20
        assert described.length_s == pytest.approx(described.frames / 10, abs=0.01)
    finally:
        recorder.finish()
    [segment] = listed(tmp_path / "cam")
    assert not segment.recording and describe(segment).length_s == pytest.approx(2.5, abs=0.01)


def test_a_part_left_by_a_crash_is_finished_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "cam"
    folder.mkdir()
    crashed = folder / (format_start(T0) + PART_SUFFIX)
    writer = MkvWriter(crashed, width=64, height=48, fps=10, start_time=T0)
    for i in range(25):
        writer.add(PICTURES[i % 6], i * 100)
    writer.flush_cluster()  # 2.5 s written in Clusters of 1 s: all on disk
    writer.abandon()
    empty = folder / (format_start(T0 - 600) + PART_SUFFIX)
    empty.write_bytes(crashed.read_bytes()[:300])  # headers only: nothing to keep
    recorder = Recorder("cam", RecordSettings(str(tmp_path)), fps=10)
    record(recorder, frames(T0 + 10, 3))
    names = sorted(p.name for p in folder.iterdir())
    assert names == [format_start(T0) + ".mkv", format_start(T0 + 10) + ".mkv"]
    assert packet_times(folder / (format_start(T0) + ".mkv")) == pytest.approx([i / 10 for i in range(25)])
    text = caplog.text
    assert "left by a crash (25 frames, 2.5 s)" in text
    assert "deleting" in text and "no complete frame" in text


def test_retention_by_size_deletes_the_oldest(tmp_path: Path) -> None:
    one_segment = len(PICTURES[0]) * 20  # about: 20 frames a segment
    settings = RecordSettings(str(tmp_path), segment_s=2, max_bytes=int(one_segment * 2.5))
    recorder = Recorder("cam", settings, fps=10)
    record(recorder, frames(T0 + 1.5, 100))  # 1 short segment then 5 full ones
    files = sorted((tmp_path / "cam").iterdir())
    total = sum(p.stat().st_size for p in files)
    assert total <= settings.max_bytes
    assert len(files) == 2  # the newest ones
    assert files[-1].name == format_start(1_795_000_010) + ".mkv"
    assert recorder.segments_deleted == recorder.segments_recorded - 2


def test_retention_by_age(tmp_path: Path) -> None:
    folder = tmp_path / "cam"
    record(Recorder("cam", RecordSettings(str(tmp_path), segment_s=2), fps=10), frames(T0, 30))
    old, new = sorted(folder.iterdir())
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    stray = folder / "notes.txt"
    stray.write_text("not a segment: never touched")
    recorder = Recorder("cam", RecordSettings(str(tmp_path), max_age_s=86400), fps=10)
    recorder.start()
    recorder.finish()
    assert sorted(folder.iterdir()) == [new, stray]
    assert recorder.segments_deleted == 1


def test_a_folder_that_cannot_be_made_is_an_error_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    recorder = Recorder("cam", RecordSettings(str(blocker)), fps=10)
    with pytest.raises(OSError):
        recorder.start()
    assert not recorder.running


def test_a_write_error_is_logged_not_per_frame_and_recording_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder("cam", RecordSettings(str(tmp_path), segment_s=1), fps=10)
    recorder.retry_s = 0.0
    recorder.start()
    try:
        for frame in frames(T0, 5):
            recorder.put(frame)
        folder = tmp_path / "cam"
        deadline = time.monotonic() + 10
        while recorder.frames_recorded < 5 and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the writer thread, with a deadline
        # The disk goes away under the segment being written: a file where the folder was.
        shutil.rmtree(folder)
        folder.write_text("in the way")
        for frame in frames(T0 + 1, 10):
            recorder.put(frame)
        while recorder.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert recorder.error is not None
        folder.unlink()  # the disk comes back
        for frame in frames(T0 + 3, 10):
            recorder.put(frame)
    finally:
        recorder.finish()
    assert recorder.error is None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert 1 <= len(errors) <= 3 and all("cannot record" in r.getMessage() for r in errors)
    files = sorted((tmp_path / "cam").iterdir())
    assert files and packet_times(files[-1])  # recording again, playable
    caplog.clear()  # the ERROR was expected


def test_the_queue_drops_the_oldest_when_the_disk_falls_behind(tmp_path: Path) -> None:
    recorder = Recorder("cam", RecordSettings(str(tmp_path)), fps=10)
    for frame in frames(T0, recorder.queue_frames + 10):  # nobody writing yet
        recorder.put(frame)
    assert recorder.frames_not_recorded == 10
    assert recorder._queue.get_nowait().seq == 11  # the oldest went
