"""The archive: every camera's recorded segments, listed and described off the IOLoop.

``/recordings/`` and the player read the recordings folders through one
:class:`Archive`.  Everything that touches the disk (listing a folder, reading
a segment's header or its whole index) runs on the archive's own small thread
pool; the handlers ``await`` the async methods, so a folder of thousands of
segments never stalls the viewers that share the IOLoop.

What is read is kept:

- **A folder listing** is one ``os.scandir`` with a ``stat`` per file, on every
  visit (so a new segment shows at the next visit); each file is compared with
  the last listing by name, size and modification time.
- **A segment's description** (its start, length and size, read from the
  file's header, or from its whole index for the segment being written) is
  read once per (size, mtime) and kept while the file is there: a finished
  segment never changes, so it is parsed once in the life of the server.  A
  listing page describes only the segments it shows.
- **A segment's index** (every frame's time and place, for the player) is
  kept for the :attr:`Archive.cache_size` segments opened last.

Days are the server's local dates (as the listing's times are shown), taken
from the segment's name (the UTC time of its first frame), so grouping by day
reads no file.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tornado.ioloop import IOLoop

from recording.mkv import SegmentIndex, read_index
from recording.recorder import (
    PART_SUFFIX,
    SEGMENT_NAME,
    SUFFIX,
    SegmentInfo,
    describe,
    segment_name,
    start_of,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_day(text: str) -> str:
    """``"2026-11-21"`` as given if it is a valid ``YYYY-MM-DD`` date; else ValueError.
    Pure function, any thread."""
    if not _DAY.fullmatch(text):
        raise ValueError("give a day as YYYY-MM-DD")
    try:
        datetime.date.fromisoformat(text)
    except ValueError as exc:
        raise ValueError("no such day") from exc
    return text


def day_of(unix_s: float) -> str:
    """The local date (the server's time zone) of ``unix_s``: ``"2026-11-21"``. Any thread."""
    t = time.localtime(unix_s)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"


@dataclass(frozen=True)
class ListingPage:
    """One page of a camera's listing (see :meth:`Archive.page`)."""

    camera: str
    #: Every day that has segments, newest first, with its number of segments.
    days: tuple[tuple[str, int], ...]
    #: The day asked for, or None for all of them.
    day: str | None
    #: The page shown (from 1) and how many pages the selection makes (at least 1).
    page: int
    pages: int
    #: Segments in the selection (the day, or all), over every page.
    total: int
    #: The page's segments, newest first, described (length, start from the file).
    segments: tuple[SegmentInfo, ...]
    #: Index in the selection (newest first, from 0) of the page's first segment.
    first: int = 0


class _Entry:
    """One file of a listing: what a stat and the name say, and its description once read."""

    __slots__ = ("day", "described", "info", "key")

    def __init__(self, key: tuple[int, int], info: SegmentInfo) -> None:
        self.key = key
        self.info = info
        self.day = day_of(info.start)
        self.described = False


class Archive:
    """The recordings folders of the server's cameras, read on worker threads.

    The async methods are called on the IOLoop thread and never block it: each
    runs its disk work on the archive's thread pool and returns when done.  The
    ``*_blocking`` methods are that work: they block, and run on any thread but
    the IOLoop's.  Thread-safe.
    """

    #: Worker threads for listings and indexes (a listing of 3000 files takes a few ms).
    workers: int = 2
    #: Indexes kept in memory (the player asks for one per segment it opens).
    cache_size: int = 16

    def __init__(self, folders: Mapping[str, Path | None]) -> None:
        #: Every camera's recordings folder by name, None for a camera that does not record.
        self.folders: dict[str, Path | None] = dict(folders)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="archive")
        self._lock = threading.Lock()
        self._files: dict[str, dict[str, _Entry]] = {}
        self._indexes: OrderedDict[Path, tuple[tuple[int, int], SegmentIndex]] = OrderedDict()
        #: Segment files whose header (or index) was read to describe them, and
        #: folder listings made, since the start (for tests and figures).
        self.descriptions_read = 0
        self.scans = 0

    def close(self) -> None:
        """Stop the worker threads once their current work is done; does not block."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the archive's worker threads: for blocking work next to the
        archive's (building a large reply).  IOLoop thread; returns what ``fn`` returns,
        raises what it raises."""
        return await IOLoop.current().run_in_executor(self._executor, fn, *args)

    # -- the IOLoop side -----------------------------------------------------------
    async def segments(self, camera: str, day: str | None = None) -> list[SegmentInfo]:
        """A camera's segments, oldest first, described; only those of ``day``
        (``YYYY-MM-DD``, local) if given.  ``[]`` for an unknown camera, one that
        does not record, or a folder that cannot be listed."""
        return await self.run(self.segments_blocking, camera, day)

    async def page(
        self, camera: str, *, day: str | None = None, page: int = 1, rows: int = 288
    ) -> ListingPage:
        """Page ``page`` (from 1) of ``rows`` segments of a camera, newest first, of
        ``day`` only if given; only the page's segments are described.  A page past
        the last has no segments."""
        return await self.run(self.page_blocking, camera, day, page, rows)

    async def neighbours(
        self, camera: str, segment: str
    ) -> tuple[str | None, SegmentInfo | None, str | None]:
        """``(previous, this, next)``: the names of the segments before and after
        ``segment`` (None at an end), and ``segment`` described; all None if the
        camera has no such segment."""
        return await self.run(self.neighbours_blocking, camera, segment)

    async def find(self, camera: str, segment: str) -> Path | None:
        """The file of a segment (finished, or still being written), or None."""
        return await self.run(self.find_blocking, camera, segment)

    async def index(self, path: Path) -> SegmentIndex:
        """The frames of a segment file (cached while the file is unchanged).
        Raises MkvError for a file that is not a recording, OSError if it cannot be read."""
        return await self.run(self.index_blocking, path)

    # -- the worker side (blocking) ------------------------------------------------------
    def scan_blocking(self, camera: str) -> list[_Entry]:
        """One listing of a camera's folder, oldest first: one scandir, a stat per
        file; what the last listing knew of an unchanged file is kept.  Blocks."""
        folder = self.folders.get(camera)
        if folder is None:
            return []
        with self._lock:
            known = self._files.get(camera, {})
            self.scans += 1
        entries: dict[str, _Entry] = {}
        try:
            with os.scandir(folder) as it:
                for dirent in it:
                    file = dirent.name
                    entry = known.get(file)
                    name = entry.info.name if entry is not None else segment_name(file)
                    if name is None:
                        continue
                    try:
                        if not dirent.is_file():
                            continue
                        st = dirent.stat()
                    except OSError:
                        continue  # deleted meanwhile
                    key = (st.st_size, st.st_mtime_ns)
                    if entry is None or entry.key != key:
                        info = SegmentInfo(
                            name=name,
                            path=Path(dirent.path),
                            start=start_of(name),
                            size=st.st_size,
                            length_s=None,
                            recording=file.endswith(PART_SUFFIX),
                        )
                        entry = _Entry(key, info)
                    entries[file] = entry
        except FileNotFoundError:
            pass  # nothing recorded yet
        except OSError as exc:
            log.warning("%s: cannot list %s: %s", camera, folder, exc.strerror or exc)
        with self._lock:
            self._files[camera] = entries  # forgets the files that are gone
        return [entries[file] for file in sorted(entries)]

    def describe_blocking(self, entries: Sequence[_Entry]) -> list[SegmentInfo]:
        """The segments of ``entries``, described: each file read once per (size,
        mtime); one that cannot be read keeps its name's start and no length.  Blocks."""
        described = []
        for entry in entries:
            if not entry.described:
                info = describe(entry.info)
                with self._lock:
                    entry.info, entry.described = info, True
                    self.descriptions_read += 1
            described.append(entry.info)
        return described

    def segments_blocking(self, camera: str, day: str | None = None) -> list[SegmentInfo]:
        """See :meth:`segments`.  Blocks."""
        entries = self.scan_blocking(camera)
        if day is not None:
            entries = [e for e in entries if e.day == day]
        return self.describe_blocking(entries)

    def page_blocking(self, camera: str, day: str | None, page: int, rows: int) -> ListingPage:
        """See :meth:`page`.  Blocks."""
        if page < 1 or rows < 1:
            raise ValueError("page and rows count from 1")
        entries = self.scan_blocking(camera)
        counts: dict[str, int] = {}
        for entry in entries:
            counts[entry.day] = counts.get(entry.day, 0) + 1
        chosen = entries if day is None else [e for e in entries if e.day == day]
        newest_first = chosen[::-1]
        first = (page - 1) * rows
        shown = self.describe_blocking(newest_first[first : first + rows])
        return ListingPage(
            camera=camera,
            days=tuple(reversed(counts.items())),
            day=day,
            page=page,
            pages=max(1, -(-len(newest_first) // rows)),
            total=len(newest_first),
            segments=tuple(shown),
            first=first,
        )

    def neighbours_blocking(
        self, camera: str, segment: str
    ) -> tuple[str | None, SegmentInfo | None, str | None]:
        """See :meth:`neighbours`.  Blocks."""
        entries = self.scan_blocking(camera)
        names = [e.info.name for e in entries]
        if segment not in names:
            return None, None, None
        at = names.index(segment)
        [info] = self.describe_blocking([entries[at]])
        return (
            names[at - 1] if at > 0 else None,
            info,
            names[at + 1] if at < len(names) - 1 else None,
        )

    def find_blocking(self, camera: str, segment: str) -> Path | None:
        """See :meth:`find`.  Blocks (a stat or two)."""
        folder = self.folders.get(camera)
        if folder is None or not SEGMENT_NAME.fullmatch(segment):
            return None
        for suffix in (SUFFIX, PART_SUFFIX):
            path = folder / (segment + suffix)
            if path.is_file():
                return path
        return None

    def index_blocking(self, path: Path) -> SegmentIndex:
        """See :meth:`index`.  Blocks."""
        st = path.stat()
        key = (st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._indexes.get(path)
            if cached is not None and cached[0] == key:
                self._indexes.move_to_end(path)
                return cached[1]
        index = read_index(path)
        with self._lock:
            self._indexes[path] = (key, index)
            while len(self._indexes) > self.cache_size:
                self._indexes.popitem(last=False)
        return index
