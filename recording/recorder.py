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
when the picture's size changes, and when the clock goes back.  The segment
being written is named ``*.mkv.part``; it is renamed when finished.  A part
left by a crash is finished on the next start (see
:func:`recording.mkv.recover`).  Frames reach the file a Cluster (a second)
at a time (a second without frames writes what was gathered), and each new
Cluster is synced to disk (at most every ``sync_interval_s``), so a crash
loses at most the second being gathered, a power cut at most about a second
more (what was not synced yet), and the next start finishes the rest.

A name is never reused: a segment that would start in the same second as a
file of the folder (two sizes in one second, or a clock set back an hour over
what it recorded) gets ``-1``, ``-2``... and the file is created exclusively,
so nothing recorded is ever overwritten.

A write error (a full disk, a removed one) stops the recording, not the
camera: the segment is cut at its last complete second and finished at once
if the disk lets it (else at the next attempt, or the next start), one
WARNING (a full disk) or ERROR says so, ``status()["state"]`` is ``"error"``,
the frames meanwhile are counted as not recorded, and a new segment is tried
every ``retry_s``; recording resumes by itself once one can be written.  After
a full disk it is tried only once the disk has room for a minute of recording
(or a segment, if shorter) at the rate last measured: the second that cutting
the segment freed would only fill again, and recording would flap.

Retention: at start, after each segment, and when the disk is full, the
oldest finished segments are deleted while the camera's segments take more
than ``max_bytes``, and any that ended more than ``max_age_s`` ago.  The wall
clock may jump (a Raspberry Pi without a real-time clock starts in 1970 or
at the time it last saved, then NTP sets it, hours or years later; an
operator fixes a wrong zone), so ages and order are measured as truthfully as
they can be known:

- a segment recorded since this recorder started is aged on the monotonic
  clock from when it was finished, and ordered by when it was recorded: no
  jump of the wall clock, forward or back, ages it, and a clock set back never
  makes the newest segments look the oldest;
- a segment of an earlier run is aged by the wall clock against its file's
  modification time (all that is known of it), and comes before every
  segment of this run.  A clock that is behind (a Pi before NTP) only keeps
  such segments longer; once NTP has set the clock their ages are right.
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
from collections.abc import Iterator
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
#: Errors that mean the disk (or the user's quota) is full: an operating condition, a WARNING.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


@dataclass(frozen=True)
class RecordSettings:
    """Where and how one camera records."""

    #: The recordings folder; the camera's segments go in ``directory/NAME/``.
    directory: str
    #: Length of a segment, seconds (segments end on multiples of it).
    segment_s: float = 300.0
    #: Keep at most this many bytes of this camera's segments (None: no limit).
    max_bytes: int | None = None
    #: Delete segments that ended longer ago than this (None: no limit): on the monotonic
    #: clock for those recorded since the start, by file time for earlier ones.
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


def _names(base: str) -> Iterator[str]:
    """``base``, then ``base-1``, ``base-2``... up to the pattern's four digits."""
    yield base
    for n in range(1, 10_000):
        yield f"{base}-{n}"


def camera_folder(settings: RecordSettings, camera: str) -> Path:
    """Where ``camera``'s segments go (absolute: a relative folder is the working directory's)."""
    return Path(settings.directory).absolute() / camera


class Recorder(Output):
    """Records one camera's frames into segment files on a thread of its own.

    ``start`` and ``finish`` block (file I/O: a worker thread); ``put`` runs on
    the camera's thread; ``close``, ``status`` on the IOLoop."""

    #: Frames waiting for the disk at most; beyond, the oldest are dropped.
    queue_frames: int = 120
    #: The segment being written is synced to disk after each new Cluster, at most this often (s).
    sync_interval_s: float = 1.0
    #: After a write error, how long to wait before trying a new segment (s).
    retry_s: float = 10.0
    #: After a full disk, recording resumes once there is room for this long at the last rate (s).
    resume_room_s: float = 60.0

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
        self._synced_clusters = 0
        self._failed_until = 0.0
        #: The errno of the write error now lasting (None while recording).
        self._error_errno: int | None = None
        #: Parts cut short by a write error and not yet finished (writer thread).
        self._unfinished: list[Path] = []
        #: Segments finished by this recorder: file name -> monotonic time when finished
        #: (kept only with a retention limit, which reads it; writer thread).
        self._finished: dict[str, float] = {}
        #: Bytes a second the camera's segments take, as last measured (0: not yet).
        self._bytes_per_s = 0.0
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

    @property
    def state(self) -> str:
        """``"recording"``, ``"error"`` (a write error lasts: see :attr:`error`; a new
        segment is tried every :attr:`retry_s`) or ``"stopped"``.  Any thread."""
        if self._thread is None:
            return "stopped"
        return "recording" if self.error is None else "error"

    def status(self) -> dict[str, Any]:
        """JSON-ready figures of the recording: ``/status``'s ``"recording"`` (its
        :attr:`state` first).  IOLoop thread; reads attributes, never blocks."""
        return {
            "state": self.state,
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
                self._idle()
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
        self._finish_unfinished()

    def _idle(self) -> None:
        """A second without frames (an outage): what was gathered goes to the disk."""
        writer = self._writer
        if writer is None:
            return
        try:
            writer.flush_cluster()
        except OSError as exc:
            self._failed(exc)
            return
        self._maybe_sync()

    def _write(self, frame: Frame) -> None:
        if time.monotonic() < self._failed_until or (self._writer is None and not self._room_to_resume()):
            self.frames_not_written += 1
            return
        if self._unfinished:
            self._finish_unfinished()
        writer = self._writer
        if writer is not None and (
            frame.timestamp >= self._segment_end
            or (frame.width, frame.height) != (writer.width, writer.height)
            or frame.timestamp < writer.start_time - 1.0  # the clock went back
        ):
            self._finish_segment()
            writer = None
            if time.monotonic() < self._failed_until:
                self.frames_not_written += 1  # the segment could not be finished: retry later
                return
        if writer is None:
            writer = self._open_segment(frame)
        before = writer.bytes_written
        writer.add(frame.jpeg, round((frame.timestamp - writer.start_time) * 1000))
        self.bytes_recorded += writer.bytes_written - before  # grows when a Cluster is written
        self.frames_recorded += 1
        if writer.clusters_written:
            self._recording_again()  # once a Cluster is on the disk, not at a head that fitted
        self._maybe_sync()

    def _room_to_resume(self) -> bool:
        """After a full disk: whether it has room for :attr:`resume_room_s` (or a
        segment) of recording now; if not, the next look is in :attr:`retry_s`."""
        if self._error_errno != errno.ENOSPC or not self._bytes_per_s:
            return True
        needed = self._bytes_per_s * min(self.resume_room_s, self.settings.segment_s)
        try:
            st = os.statvfs(self.folder)
        except OSError:
            return True  # the attempt will tell
        if st.f_bavail * st.f_frsize >= needed:
            return True
        self._failed_until = time.monotonic() + self.retry_s
        return False

    def _measure(self, writer: MkvWriter) -> None:
        """Note the rate of a finished segment's bytes (for :meth:`_room_to_resume`; not
        of one cut short, whose last second is missing)."""
        length_s = writer.duration_ms / 1000
        if length_s >= 1.0:
            self._bytes_per_s = writer.bytes_written / length_s

    def _recording_again(self) -> None:
        if self.error is not None:
            log.info("%s: recording again", self.camera)
            self.error = None
            self._error_errno = None

    def _open_segment(self, frame: Frame) -> MkvWriter:
        start = frame.timestamp
        segment_s = self.settings.segment_s
        self._segment_end = (math.floor(start / segment_s) + 1) * segment_s
        self.folder.mkdir(parents=True, exist_ok=True)  # again, if someone removed it
        taken = {segment_name(p) for p in self.folder.iterdir()}
        for name in _names(format_start(start)):
            if name in taken:
                continue
            path = self.folder / (name + PART_SUFFIX)
            try:
                writer = MkvWriter(
                    path,
                    width=frame.width,
                    height=frame.height,
                    fps=self.fps,
                    start_time=start,
                    exclusive=True,
                )
            except FileExistsError:
                continue  # made meanwhile, by someone else: never replaced
            except OSError:
                if path.exists():
                    self._unfinished.append(path)  # a head cut short: deleted by _finish_unfinished
                raise
            break
        else:
            raise OSError(errno.EEXIST, "every name of this second is taken", str(self.folder))
        self._writer, self._writer_name = writer, name
        self._last_sync = time.monotonic()
        self._synced_clusters = 0
        self.bytes_recorded += writer.bytes_written
        log.debug("%s: new segment %s", self.camera, name)
        return writer

    def _finish_segment(self) -> None:
        writer, self._writer = self._writer, None
        name, self._writer_name = self._writer_name, ""
        if writer is None:
            return
        before = writer.bytes_written
        part = self.folder / (name + PART_SUFFIX)
        try:
            writer.close()
            os.replace(part, self.folder / (name + SUFFIX))
            _sync_folder(self.folder)
        except OSError as exc:
            writer.abandon()
            if part.exists():
                self._unfinished.append(part)
            self._failed(exc)
            return
        self.bytes_recorded += writer.bytes_written - before
        self.segments_recorded += 1
        self._measure(writer)
        self._recording_again()
        self._remember(name + SUFFIX)
        log.debug("%s: segment %s finished (%d frames)", self.camera, name, writer.frames)
        self._apply_retention()

    def _remember(self, file: str) -> None:
        """Note a segment of this run (for retention's ages and order)."""
        if self.settings.max_bytes is not None or self.settings.max_age_s is not None:
            self._finished[file] = time.monotonic()

    def _maybe_sync(self) -> None:
        """Sync the part if a Cluster was written since the last sync, at most every
        :attr:`sync_interval_s`."""
        writer = self._writer
        if writer is None or writer.clusters_written == self._synced_clusters:
            return
        if time.monotonic() - self._last_sync < self.sync_interval_s:
            return
        self._last_sync = time.monotonic()
        try:
            writer.sync()
        except OSError as exc:
            self._failed(exc)
            return
        self._synced_clusters = writer.clusters_written

    def _failed(self, exc: OSError | None) -> None:
        """A write error: cut the segment, finish it if the disk lets it, say so once
        (per error: not again while the same one lasts) and retry in :attr:`retry_s`."""
        writer, self._writer = self._writer, None
        self._writer_name = ""
        if writer is not None:
            writer.abandon()
            if writer.path.exists():
                self._unfinished.append(writer.path)
        self._failed_until = time.monotonic() + self.retry_s
        full = exc is not None and exc.errno in DISK_FULL
        if full:
            self._apply_retention()  # make room first, if a limit allows
        self._finish_unfinished()  # cutting the unfinished second frees room too
        message = f"{exc.strerror or exc}" if exc is not None else "internal error"
        if exc is not None and exc.filename:
            message = f"{exc.filename}: {message}"
        number = exc.errno if exc is not None else None
        if self.error is None or number != self._error_errno:
            if full:
                log.warning(
                    "%s: cannot record, the disk is full: %s (frames are not recorded meanwhile; "
                    "trying again every %g s)",
                    self.camera,
                    message,
                    self.retry_s,
                )
            else:
                log.error(
                    "%s: cannot record: %s (trying again every %g s)", self.camera, message, self.retry_s
                )
        self.error = message
        self._error_errno = number

    def _finish_unfinished(self) -> None:
        """Finish the parts a write error cut short (see :func:`recording.mkv.recover`):
        a part with no complete second is deleted; one that cannot be finished yet
        (the disk still full) is kept for the next attempt, or the next start."""
        left: list[Path] = []
        for path in self._unfinished:
            if self._finish_part(path, "cut short by a write error", this_run=True) is None:
                left.append(path)
        self._unfinished = left

    # -- files -------------------------------------------------------------------
    def _recover_parts(self) -> None:
        for path in sorted(self.folder.glob("*" + PART_SUFFIX)):
            if segment_name(path) is not None:
                self._finish_part(path, "left by a crash", this_run=False)

    def _finish_part(self, path: Path, why: str, *, this_run: bool) -> bool | None:
        """Finish one part and rename it (to a free name: never over a segment); a
        part with nothing to keep is deleted (a WARNING for a part left by an earlier
        run, INFO for one of this run: its write error was said already).  True if
        finished, False if deleted, None if it cannot be now (an OSError, logged at
        INFO: the caller tries again)."""
        name = segment_name(path)
        if name is None:
            return False
        try:
            index = recover(path)
        except MkvError as exc:
            level = logging.INFO if this_run else logging.WARNING
            log.log(level, "%s: deleting %s, %s: %s", self.camera, path.name, why, exc)
            try:
                path.unlink(missing_ok=True)
            except OSError as unlink_exc:
                log.warning(
                    "%s: cannot delete %s: %s", self.camera, path.name, unlink_exc.strerror or unlink_exc
                )
            return False
        except OSError as exc:
            log.info("%s: cannot finish %s yet: %s", self.camera, path.name, exc.strerror or exc)
            return None
        try:
            taken = {segment_name(p) for p in self.folder.iterdir() if p != path}
            final = next(n for n in _names(name) if n not in taken)
            os.replace(path, self.folder / (final + SUFFIX))
            _sync_folder(self.folder)
        except (OSError, StopIteration) as exc:
            log.info("%s: cannot rename %s yet: %s", self.camera, path.name, exc)
            return None
        if this_run:
            self._remember(final + SUFFIX)
        log.info(
            "%s: finished %s, %s (%d frames, %.1f s)",
            self.camera,
            path.name,
            why,
            index.frame_count,
            index.length_ms() / 1000,
        )
        return True

    def _apply_retention(self) -> None:
        max_bytes, max_age_s = self.settings.max_bytes, self.settings.max_age_s
        if max_bytes is None and max_age_s is None:
            return
        try:
            found = [p for p in self.folder.iterdir() if segment_name(p) is not None]
            stats = {p: p.stat() for p in found}
        except OSError as exc:
            log.warning("%s: cannot list %s: %s", self.camera, self.folder, exc.strerror or exc)
            return
        mine = self._finished
        for file in mine.keys() - {p.name for p in found}:
            del mine[file]  # deleted by someone else
        # Oldest first: earlier runs' segments by name, then this run's in the order recorded.
        earlier = sorted((p for p in found if p.name not in mine), key=lambda p: p.name)
        files = earlier + sorted((p for p in found if p.name in mine), key=lambda p: mine[p.name])
        total = sum(st.st_size for st in stats.values())
        wall_now, monotonic_now = time.time(), time.monotonic()
        for path in files:
            if path.name.endswith(PART_SUFFIX):
                continue  # never the segment being written
            st = stats[path]
            finished_at = mine.get(path.name)
            age_s = wall_now - st.st_mtime if finished_at is None else monotonic_now - finished_at
            too_big = max_bytes is not None and total > max_bytes
            too_old = max_age_s is not None and age_s > max_age_s
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
            mine.pop(path.name, None)
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
