"""``/recordings/``: the recorded segments of each camera, and their playback.

- ``/recordings/``: a page listing each camera's segments (start, length,
  size), newest first, a page (``?page=``) or a day (``?day=``) at a time, each
  with a player link and a download link; ``index.json`` every segment as JSON.
- ``/recordings/NAME/SEGMENT``: the player page (``static/player.js`` draws
  the frames on a canvas at their recorded pace, with pause, resume and
  seeking).
- ``/recordings/NAME/SEGMENT.json``: where each frame lies in the file and
  when it was taken; the player fetches the frames it needs with HTTP Range
  requests of the file.
- ``/recordings/NAME/SEGMENT.mkv``: the file itself (Range requests,
  ``Content-Disposition: attachment``).  The segment being written is served
  as it stands (it plays up to its last complete second).

The handlers are coroutines: every listing, header and index is read by the
:class:`recording.archive.Archive` on its own threads, never on the IOLoop.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import tornado.web

from handlers.access import Access
from handlers.base import BaseHandler, admit
from handlers.pages import PageHandler
from handlers.plain import write_short_error
from recording.archive import Archive, day_of, parse_day
from recording.mkv import MkvError, SegmentIndex
from recording.recorder import PART_SUFFIX, SEGMENT_NAME, SUFFIX, SegmentInfo, start_of

log = logging.getLogger(__name__)

_PAGE = re.compile(r"[1-9][0-9]{0,5}")


def local_time(unix_s: float) -> str:
    """``2026-11-21 21:30:00 UTC`` in the server's time zone."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(unix_s))


def iso_time(unix_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_s))


def human_size(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000  # type: ignore[assignment]
    raise AssertionError


def human_length(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def segment_fields(camera: str, segment: SegmentInfo) -> dict[str, Any]:
    """A segment as the listing shows it (the JSON fields and the page's text)."""
    return {
        "name": segment.name,
        "start": round(segment.start, 3),
        "start_iso": iso_time(segment.start),
        "start_text": local_time(segment.start),
        "length_s": None if segment.length_s is None else round(segment.length_s, 3),
        "length_text": human_length(segment.length_s),
        "size": segment.size,
        "size_text": human_size(segment.size),
        "recording": segment.recording,
        "day": day_of(start_of(segment.name)),
        "player": f"{camera}/{segment.name}",
        "file": f"{camera}/{segment.name}.mkv",
    }


def query_day(handler: tornado.web.RequestHandler) -> str | None:
    """``?day=YYYY-MM-DD`` of a listing request, None without it.  Raises
    ValueError with a short message (no echo of the input) for a malformed one."""
    text = handler.get_query_argument("day", "") or ""
    try:
        return parse_day(text) if text else None
    except ValueError as exc:
        raise ValueError(f"bad day: {exc}") from exc


def query_page(handler: tornado.web.RequestHandler) -> int:
    """``?page=N`` (from 1) of a listing request, 1 without it.  Raises ValueError
    with a short message for a malformed one."""
    text = handler.get_query_argument("page", "") or ""
    if text and not _PAGE.fullmatch(text):
        raise ValueError("bad page: give a number from 1")
    return int(text or 1)


def listing_json(cameras: Mapping[str, tuple[bool, list[SegmentInfo]]]) -> bytes:
    """The body of ``index.json`` (``cameras``: whether each records, and its
    segments oldest first).  Pure but slow for thousands of segments: run it off the loop."""
    body = {
        name: {"recording": recording, "segments": [segment_fields(name, s) for s in segments]}
        for name, (recording, segments) in cameras.items()
    }
    return (json.dumps({"cameras": body}, separators=(",", ":")) + "\n").encode()


def index_json(
    camera: str, segment: str, index: SegmentIndex, recording: bool, gzip_ok: bool
) -> tuple[bytes, bool]:
    """The body of ``SEGMENT.json``, gzipped if ``gzip_ok`` and worth it; returns
    ``(body, gzipped)``.  Pure but slow for long segments: run it off the loop."""
    body = {
        "camera": camera,
        "name": segment,
        "start": index.start_time,
        "width": index.width,
        "height": index.height,
        "length_s": round(index.length_ms() / 1000, 3),
        "recording": recording,
        "file": f"{segment}.mkv",
        "t": [t for t, _, _ in index.frames],
        "offset": [offset for _, offset, _ in index.frames],
        "size": [size for _, _, size in index.frames],
    }
    data = json.dumps(body, separators=(",", ":")).encode()
    if gzip_ok and len(data) > 1400:
        return gzip.compress(data, compresslevel=5), True
    return data, False


class RecordingsPageHandler(PageHandler):
    """``/recordings/``: every camera's segments, newest first, a page at a time.

    Without parameters each camera shows its newest :attr:`rows_per_page`
    segments; ``?page=N`` the next ones, ``?day=YYYY-MM-DD`` (a local date) only
    that day's (also paged), with links to every day that has segments.  A
    malformed ``day`` or ``page`` gets a 400; a day without segments or a page
    past the last shows none.  The listing is made on the archive's threads.
    """

    #: Segments shown per camera and page: a day of 5-minute segments.
    rows_per_page = 288

    def initialize(self, archive: Archive, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(**kwargs)
        self.archive = archive

    def link(self, anchor: str, **params: str | int | None) -> str:
        """A relative link to the listing with ``params`` (and the page's token), to ``#anchor``."""
        access: Access | None = self.application.settings.get("access")
        token = access.page_query(self.request) if access else ""
        query = urlencode([(k, v) for k, v in params.items() if v is not None])
        if token:
            query = f"{query}&{token[1:]}" if query else token[1:]
        return "./" + (f"?{query}" if query else "") + f"#{anchor}"

    async def get(self, *args: str) -> None:
        try:
            day, page = query_day(self), query_page(self)
        except ValueError as exc:
            self.fail(400, str(exc))
            return
        recorded = [name for name, folder in self.archive.folders.items() if folder is not None]
        pages = await asyncio.gather(
            *(self.archive.page(name, day=day, page=page, rows=self.rows_per_page) for name in recorded)
        )
        listings = dict(zip(recorded, pages, strict=True))
        cameras = []
        for name, folder in self.archive.folders.items():
            camera: dict[str, Any] = {"name": name, "folder": str(folder) if folder else None, "segments": []}
            listing = listings.get(name)
            if listing is not None:
                anchor = f"camera-{name}"
                camera.update(
                    segments=[segment_fields(name, s) for s in listing.segments],
                    days=[
                        {"day": d, "count": n, "href": self.link(anchor, day=d), "current": d == day}
                        for d, n in listing.days
                    ],
                    all_href=self.link(anchor),
                    day=day,
                    page=listing.page,
                    pages=listing.pages,
                    total=listing.total,
                    first=listing.first,
                    newer=self.link(anchor, day=day, page=page - 1) if page > 1 else None,
                    older=self.link(anchor, day=day, page=page + 1) if page < listing.pages else None,
                )
            cameras.append(camera)
        self.values = {**self.values, "recorded": cameras}
        super().get(*args)

    head = get


class RecordingsJsonHandler(BaseHandler):
    """``/recordings/index.json``: every camera's segments as JSON, oldest first,
    all of them (``?day=YYYY-MM-DD``: that day's only).  Listed and encoded on the
    archive's threads."""

    def initialize(self, archive: Archive) -> None:
        self.archive = archive

    def compute_etag(self) -> None:
        return None

    async def get(self) -> None:
        try:
            day = query_day(self)
        except ValueError as exc:
            self.fail(400, str(exc))
            return
        names = list(self.archive.folders)
        found = await asyncio.gather(*(self.archive.segments(name, day) for name in names))
        cameras = {
            name: (self.archive.folders[name] is not None, segments)
            for name, segments in zip(names, found, strict=True)
        }
        body = await self.archive.run(listing_json, cameras)
        self.set_header("Content-Type", "application/json")
        self.set_no_cache()
        self.finish(body)

    head = get


class PlayerPageHandler(PageHandler):
    """``/recordings/NAME/SEGMENT``: the player of one segment, with links to its
    neighbours (looked up on the archive's threads)."""

    def initialize(self, archive: Archive, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(**kwargs)
        self.archive = archive

    async def get(self, camera: str, segment: str) -> None:
        previous, info, following = await self.archive.neighbours(camera, segment)
        if info is None:
            self.fail(404, "no such recording")
            return
        self.values = {
            **self.values,
            "camera": camera,
            "segment": segment,
            "start_text": local_time(info.start),
            "previous": previous,
            "next": following,
        }
        super().get()

    head = get


class SegmentIndexHandler(BaseHandler):
    """``/recordings/NAME/SEGMENT.json``: when each frame was taken and where it lies
    (read and encoded on the archive's threads)."""

    def initialize(self, archive: Archive) -> None:
        self.archive = archive

    def compute_etag(self) -> None:
        return None

    async def get(self, camera: str, segment: str) -> None:
        path = await self.archive.find(camera, segment)
        if path is None:
            self.fail(404, "no such recording")
            return
        try:
            index = await self.archive.index(path)
        except MkvError as exc:
            self.fail(422, f"cannot read this recording: {exc}")
            return
        except OSError:
            self.fail(404, "no such recording")
            return
        recording = path.name.endswith(PART_SUFFIX)
        gzip_ok = "gzip" in self.request.headers.get("Accept-Encoding", "")
        data, gzipped = await self.archive.run(index_json, camera, segment, index, recording, gzip_ok)
        self.set_header("Content-Type", "application/json")
        self.set_header("Vary", "Accept-Encoding")
        self.set_no_cache()
        if gzipped:
            self.set_header("Content-Encoding", "gzip")
        self.finish(data)

    head = get


class SegmentFileHandler(tornado.web.StaticFileHandler):
    """``/recordings/NAME/SEGMENT.mkv``: the file, with Range requests, as an attachment."""

    def initialize(self, path: str, camera: str) -> None:  # type: ignore[override]
        super().initialize(path)
        self.camera = camera

    def prepare(self) -> None:
        admit(self)

    @classmethod
    def get_absolute_path(cls, root: str, path: str) -> str:
        """``SEGMENT.mkv``: the finished file, or else the part being written."""
        finished = os.path.abspath(os.path.join(root, path))
        if not os.path.isfile(finished) and path.endswith(SUFFIX):
            part = os.path.abspath(os.path.join(root, path[: -len(SUFFIX)] + PART_SUFFIX))
            if os.path.isfile(part):
                return part
        return finished

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        name = os.path.basename(absolute_path)
        stem = name.removesuffix(PART_SUFFIX).removesuffix(SUFFIX)
        if os.path.dirname(absolute_path) != os.path.abspath(root) or not SEGMENT_NAME.match(stem):
            raise tornado.web.HTTPError(404)
        return super().validate_absolute_path(root, absolute_path)

    def compute_etag(self) -> str | None:
        # The default hashes the whole file: size and time say the same here.
        st = os.stat(self.absolute_path)
        return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'

    def get_content_type(self) -> str:
        return "video/x-matroska"

    def set_extra_headers(self, path: str) -> None:
        stem = os.path.basename(path).removesuffix(PART_SUFFIX).removesuffix(SUFFIX)
        self.set_header("Content-Disposition", f'attachment; filename="{self.camera}-{stem}.mkv"')
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")

    def write_error(self, status_code: int, **kwargs: object) -> None:
        write_short_error(self, status_code)
