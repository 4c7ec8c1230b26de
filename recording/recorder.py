"""Recording: a camera's JPEGs, as they are, in Matroska segment files.

A :class:`Recorder` belongs to one camera: an output of its feed
(:class:`feed.Output`, attached with a hold, so the camera runs while it
records).  The feed hands it every frame on the camera's own thread
(:meth:`Recorder.put`, which never blocks: a bounded queue, the oldest frame
dropped and counted if the disk falls behind); a thread of its own writes the
live ones with :class:`recording.mkv.MkvWriter`.

Files go in ``DIRECTORY/CAMERA/``, one per segment, named after the UTC time
of their first frame (``20261121T213000Z.mkv``).  Segments end on multiples
of ``segment_s`` of the wall clock (every 5 minutes on the 5 minutes, say),
and when the picture's size changes.  The segment being written is named
``*.mkv.part``; it is renamed when finished.  A part left by a crash is
finished on the next start (see :func:`recording.mkv.recover`), so a crash or a
power cut loses at most the last second or so of what was written, and the
part is synced to disk every ``sync_interval_s``.

Retention: after each segment and at start, the oldest finished segments are
deleted while the camera's segments take more than ``max_bytes``, and any
that ended more than ``max_age_s`` ago.
"""

from __future__ import annotations

import asyncio
import calendar
import errno
import logging
import math
import os
import queue
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feed import Output
from frame import Frame
from recording.mkv import MkvError, MkvWriter, format_start, read_index, recover

log = logging.getLogger(__name__)

#: A segment's name (without ``.mkv``): its start, and a number if two start in one second.
SEGMENT_PATTERN = r"\d{8}T\d{6}Z(?:-\d{1,4})?"
SEGMENT_NAME = re.compile(f"^{SEGMENT_PATTERN}$")
SUFFIX = ".mkv"
PART_SUFFIX = ".mkv.part"


@dataclass(frozen=True)
class RecordSettings:
    """Where and how one camera records."""

    #: The recordings folder; the camera's segments go in ``directory/NAME/``.
    directory: str
    #: Length of a segment, seconds (segments end on multiples of it).
    segment_s: float = 300.0
    #: Keep at most this many bytes of this camera's segments (None: no limit).
    max_bytes: int | None = None
    #: Delete segments that ended longer ago than this (None: no limit).
    max_age_s: float | None = None


@dataclass(frozen=True)
class SegmentInfo:
    """One segment file, for the listing."""

    name: str
    path: Path
    start: float
    size: int
    #: Length in seconds (None when it cannot be read).
    length_s: float | None
    #: True for the segment being written now.
    recording: bool
    frames: int | None = None
    width: int | None = None
    height: int | None = None


def start_of(name: str) -> float:
    """Unix time of a segment's name (``20261121T213000Z`` or ``20261121T213000Z-1``).
    Pure function, any thread."""
    return float(
        calendar.timegm(
            (
                int(name[0:4]),
                int(name[4:6]),
                int(name[6:8]),
                int(name[9:11]),
                int(name[11:13]),
                int(name[13:15]),
            )
        )
    )


def segment_name(file: str | Path) -> str | None:
    """The segment name of a file of the camera's folder (a Path, or a file name such as
    ``20261121T213000Z.mkv.part``), or None if it is not a segment.  Pure function."""
    name = file.name if isinstance(file, Path) else file
    for suffix in (PART_SUFFIX, SUFFIX):
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            return stem if SEGMENT_NAME.match(stem) else None
    return None


def camera_folder(settings: RecordSettings, camera: str) -> Path:
    """Where ``camera``'s segments go (absolute: a relative folder is the working directory's)."""
    return Path(settings.directory).absolute() / camera


class Recorder(Output):
    """Records one camera's frames into segment files on a thread of its own.

    ``start`` and ``finish`` block (file I/O: a worker thread); ``put`` runs on
    the camera's thread; ``close``, ``status`` on the IOLoop."""

    #: Frames waiting for the disk at most; beyond, the oldest are dropped.
    queue_frames: int = 120
    #: How often the segment being written is synced to disk.
    sync_interval_s: float = 5.0
    #: After a write error, how long to wait before trying a new segment.
    retry_s: float = 10.0

    def __init__(self, camera: str, settings: RecordSettings, *, fps: float = 30.0) -> None:
        self.camera = camera
        self.settings = settings
        self.folder = camera_folder(settings, camera)
        self.fps = fps
        self._queue: queue.Queue[Frame | None] = queue.Queue(self.queue_frames)
        self._thread: threading.Thread | None = None
        self._writer: MkvWriter | None = None
        self._writer_name = ""
        self._segment_end = 0.0
        self._last_sync = 0.0
        self._failed_until = 0.0
        self.frames_recorded = 0
        #: Frames the queue dropped (the disk fell behind; the camera's thread), and
        #: frames not written while a write error lasts (writer thread).
        self.frames_overflowed = 0
        self.frames_not_written = 0
        self.bytes_recorded = 0
        self.segments_recorded = 0
        self.segments_deleted = 0
        self.error: str | None = None

    #: Its entry in the feed's status.
    kind = "recording"

    # -- the owner's side -----------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Create the folder, finish parts left by a crash, apply retention and
        start the writer thread.  Blocking file I/O: call it off the IOLoop.
        Raises OSError if the folder cannot be made or written."""
        if self._thread is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if not os.access(self.folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "not writable")
        self._recover_parts()
        self._apply_retention()
        self._thread = threading.Thread(target=self._run, name=f"record-{self.camera}", daemon=True)
        self._thread.start()
        log.info("%s: recording to %s", self.camera, self.folder)

    def put(self, frame: Frame) -> None:
        """Queue one live frame for the disk (the "no signal" picture is not
        recorded: an outage is a gap in time).  Any thread (the camera's);
        never blocks: drops the oldest queued frame when full."""
        if not frame.live:
            return
        while True:
            try:
                self._queue.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.frames_overflowed += 1
                except queue.Empty:
                    pass

    def close(self) -> asyncio.Future[None] | None:
        """:meth:`finish` on a worker thread (IOLoop; the future is done when it
        has finished); without a running event loop, :meth:`finish` itself."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.finish()
            return None
        return loop.run_in_executor(None, self.finish)

    def finish(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, finish the segment and stop the thread; blocks up
        to ``timeout_s`` (off the IOLoop).  Idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        deadline = time.monotonic() + timeout_s
        while thread.is_alive() and time.monotonic() < deadline:
            try:
                self._queue.put(None, timeout=0.5)  # after every frame already queued
                break
            except queue.Full:
                continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.warning("%s: the recorder did not finish within %g s", self.camera, timeout_s)
        else:
            log.info("%s: recording stopped", self.camera)

    @property
    def frames_not_recorded(self) -> int:
        """Frames not recorded: the disk fell behind, or could not be written."""
        return self.frames_overflowed + self.frames_not_written

    def status(self) -> dict[str, Any]:
        """JSON-ready figures of the recording: ``/status``'s ``"recording"``."""
        return {
            "directory": str(self.folder),
            "segment": self._writer_name or None,
            "frames_recorded": self.frames_recorded,
            "frames_not_recorded": self.frames_not_recorded,
            "bytes_recorded": self.bytes_recorded,
            "segments_recorded": self.segments_recorded,
            "segments_deleted": self.segments_deleted,
            "error": self.error,
        }

    # -- the writer thread -----------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                frame = self._queue.get(timeout=1.0)
            except queue.Empty:
                self._maybe_sync()
                continue
            if frame is None:
                break
            try:
                self._write(frame)
            except OSError as exc:
                self._failed(exc)
            except Exception:
                log.exception("%s: recording failed", self.camera)
                self._failed(None)
        self._finish_segment()

    def _write(self, frame: Frame) -> None:
        if time.monotonic() < self._failed_until:
            self.frames_not_written += 1
            return
        writer = self._writer
        if writer is not None and (
            frame.timestamp >= self._segment_end
            or (frame.width, frame.height) != (writer.width, writer.height)
            or frame.timestamp < writer.start_time - 1.0  # the clock went back
        ):
            self._finish_segment()
            writer = None
        if writer is None:
            writer = self._open_segment(frame)
        before = writer.bytes_written
        writer.add(frame.jpeg, round((frame.timestamp - writer.start_time) * 1000))
        self.bytes_recorded += writer.bytes_written - before  # grows when a Cluster is written
        self.frames_recorded += 1
        if self.error is not None:
            log.info("%s: recording again", self.camera)
            self.error = None
        self._maybe_sync()

    def _open_segment(self, frame: Frame) -> MkvWriter:
        start = frame.timestamp
        segment_s = self.settings.segment_s
        self._segment_end = (math.floor(start / segment_s) + 1) * segment_s
        name = format_start(start)
        self.folder.mkdir(parents=True, exist_ok=True)  # again, if someone removed it
        taken = {segment_name(p) for p in self.folder.iterdir()}
        base, n = name, 1
        while name in taken:
            name = f"{base}-{n}"
            n += 1
        writer = MkvWriter(
            self.folder / (name + PART_SUFFIX),
            width=frame.width,
            height=frame.height,
            fps=self.fps,
            start_time=start,
        )
        self._writer, self._writer_name = writer, name
        self._last_sync = time.monotonic()
        self.bytes_recorded += writer.bytes_written
        log.debug("%s: new segment %s", self.camera, name)
        return writer

    def _finish_segment(self) -> None:
        writer, self._writer = self._writer, None
        name, self._writer_name = self._writer_name, ""
        if writer is None:
            return
        before = writer.bytes_written
        try:
            writer.close()
            part = self.folder / (name + PART_SUFFIX)
            os.replace(part, self.folder / (name + SUFFIX))
            _sync_folder(self.folder)
        except OSError as exc:
            writer.abandon()
            self._failed(exc)
            return
        self.bytes_recorded += writer.bytes_written - before
        self.segments_recorded += 1
        log.debug("%s: segment %s finished (%d frames)", self.camera, name, writer.frames)
        self._apply_retention()

    def _maybe_sync(self) -> None:
        writer = self._writer
        if writer is None or time.monotonic() - self._last_sync < self.sync_interval_s:
            return
        self._last_sync = time.monotonic()
        try:
            writer.sync()
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError | None) -> None:
        message = f"{exc.strerror or exc}" if exc is not None else "internal error"
        if exc is not None and exc.filename:
            message = f"{exc.filename}: {message}"
        if self.error != message:
            log.error("%s: cannot record: %s (trying again in %g s)", self.camera, message, self.retry_s)
        self.error = message
        writer, self._writer = self._writer, None
        self._writer_name = ""
        if writer is not None:
            writer.abandon()  # left as a part: finished at the next start
        self._failed_until = time.monotonic() + self.retry_s
        if exc is not None and exc.errno == 28:  # ENOSPC: make room if a limit allows
            self._apply_retention()

    # -- files -------------------------------------------------------------------
    def _recover_parts(self) -> None:
        for path in sorted(self.folder.glob("*" + PART_SUFFIX)):
            name = segment_name(path)
            if name is None:
                continue
            try:
                index = recover(path)
                os.replace(path, self.folder / (name + SUFFIX))
                log.info(
                    "%s: finished %s, left by a crash (%d frames, %.1f s)",
                    self.camera,
                    path.name,
                    index.frame_count,
                    index.length_ms() / 1000,
                )
            except MkvError as exc:
                log.warning("%s: deleting %s, left by a crash: %s", self.camera, path.name, exc)
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("%s: cannot finish %s: %s", self.camera, path.name, exc.strerror or exc)

    def _apply_retention(self) -> None:
        max_bytes, max_age_s = self.settings.max_bytes, self.settings.max_age_s
        if max_bytes is None and max_age_s is None:
            return
        try:
            files = sorted(
                (p for p in self.folder.iterdir() if segment_name(p) is not None), key=lambda p: p.name
            )
            stats = {p: p.stat() for p in files}
        except OSError as exc:
            log.warning("%s: cannot list %s: %s", self.camera, self.folder, exc.strerror or exc)
            return
        total = sum(st.st_size for st in stats.values())
        now = time.time()
        for path in files:
            if path.name.endswith(PART_SUFFIX):
                continue  # never the segment being written
            st = stats[path]
            too_big = max_bytes is not None and total > max_bytes
            too_old = max_age_s is not None and now - st.st_mtime > max_age_s
            if not (too_big or too_old):
                if max_age_s is None:
                    break  # oldest first: the rest are newer
                continue
            try:
                path.unlink()
            except OSError as exc:
                log.warning("%s: cannot delete %s: %s", self.camera, path.name, exc.strerror or exc)
                continue
            total -= st.st_size
            self.segments_deleted += 1
            log.info("%s: deleted %s (%s)", self.camera, path.name, "size limit" if too_big else "age limit")


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def describe(segment: SegmentInfo) -> SegmentInfo:
    """``segment`` with its length, frame count and size read from the file."""
    try:
        # A finished file says its Duration in its header; a part must be read through.
        index = read_index(segment.path, frames=segment.recording)
    except (OSError, MkvError):
        return segment
    start = index.start_time if index.start_time is not None else segment.start
    return SegmentInfo(
        name=segment.name,
        path=segment.path,
        start=start,
        size=segment.size,
        length_s=index.length_ms() / 1000,
        recording=segment.recording,
        frames=index.frame_count if segment.recording else None,
        width=index.width,
        height=index.height,
    )
