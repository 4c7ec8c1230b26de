"""``/recordings/``: the recorded segments of each camera, and their playback.

- ``/recordings/``: a page listing each camera's segments (start, length,
  size), each with a player link and a download link; ``index.json`` the same
  as JSON.
- ``/recordings/NAME/SEGMENT``: the player page (``static/player.js`` draws
  the frames on a canvas at their recorded pace, with pause, resume and
  seeking).
- ``/recordings/NAME/SEGMENT.json``: where each frame lies in the file and
  when it was taken; the player fetches the frames it needs with HTTP Range
  requests of the file.
- ``/recordings/NAME/SEGMENT.mkv``: the file itself (Range requests,
  ``Content-Disposition: attachment``).  The segment being written is served
  as it stands (it plays up to its last complete second).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tornado.web

from handlers.base import BaseHandler, admit
from handlers.pages import PageHandler
from handlers.plain import write_short_error
from recording.mkv import MkvError, SegmentIndex, read_index
from recording.recorder import PART_SUFFIX, SEGMENT_NAME, SUFFIX, SegmentInfo, describe, list_segments

log = logging.getLogger(__name__)


class Archive:
    """The recording folders of the server's cameras, and a small cache of indexes."""

    #: Indexes kept in memory (the player asks for one per segment it opens).
    cache_size = 16

    def __init__(self, folders: Mapping[str, Path | None]) -> None:
        #: Every camera's recordings folder by name, None for a camera that does not record.
        self.folders: dict[str, Path | None] = dict(folders)
        self._indexes: OrderedDict[Path, tuple[tuple[int, int], SegmentIndex]] = OrderedDict()

    def segments(self, camera: str) -> list[SegmentInfo]:
        """A camera's segments, oldest first, with their lengths."""
        folder = self.folders.get(camera)
        if folder is None:
            return []
        return [describe(segment) for segment in list_segments(folder)]

    def path(self, camera: str, segment: str) -> Path | None:
        """The file of a segment (finished, or still being written), or None."""
        folder = self.folders.get(camera)
        if folder is None or not SEGMENT_NAME.match(segment):
            return None
        for suffix in (SUFFIX, PART_SUFFIX):
            path = folder / (segment + suffix)
            if path.is_file():
                return path
        return None

    def index(self, path: Path) -> SegmentIndex:
        """The frames of a segment file (cached while the file is unchanged)."""
        st = path.stat()
        key = (st.st_size, st.st_mtime_ns)
        cached = self._indexes.get(path)
        if cached is not None and cached[0] == key:
            self._indexes.move_to_end(path)
            return cached[1]
        index = read_index(path)
        self._indexes[path] = (key, index)
        while len(self._indexes) > self.cache_size:
            self._indexes.popitem(last=False)
        return index


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
        "player": f"{camera}/{segment.name}",
        "file": f"{camera}/{segment.name}.mkv",
    }


class RecordingsPageHandler(PageHandler):
    """``/recordings/``: every camera's segments, newest first."""

    def initialize(self, archive: Archive, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(**kwargs)
        self.archive = archive

    def get(self, *args: str) -> None:
        cameras = []
        for name, folder in self.archive.folders.items():
            segments = [segment_fields(name, s) for s in reversed(self.archive.segments(name))]
            cameras.append({"name": name, "folder": str(folder) if folder else None, "segments": segments})
        self.values = {**self.values, "recorded": cameras}
        super().get(*args)

    head = get


class RecordingsJsonHandler(BaseHandler):
    """``/recordings/index.json``: the same listing as JSON, oldest first."""

    def initialize(self, archive: Archive) -> None:
        self.archive = archive

    def compute_etag(self) -> None:
        return None

    def get(self) -> None:
        body = {
            name: {
                "recording": folder is not None,
                "segments": [segment_fields(name, s) for s in self.archive.segments(name)],
            }
            for name, folder in self.archive.folders.items()
        }
        self.set_header("Content-Type", "application/json")
        self.set_no_cache()
        self.finish(json.dumps({"cameras": body}, indent=1) + "\n")

    head = get


class PlayerPageHandler(PageHandler):
    """``/recordings/NAME/SEGMENT``: the player of one segment."""

    def initialize(self, archive: Archive, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(**kwargs)
        self.archive = archive

    def get(self, camera: str, segment: str) -> None:
        path = self.archive.path(camera, segment)
        if path is None:
            self.fail(404, "no such recording")
            return
        segments = list_segments(path.parent)
        names = [s.name for s in segments]
        at = names.index(segment) if segment in names else -1
        start = describe(segments[at]).start if at >= 0 else 0.0
        self.values = {
            **self.values,
            "camera": camera,
            "segment": segment,
            "start_text": local_time(start),
            "previous": names[at - 1] if at > 0 else None,
            "next": names[at + 1] if 0 <= at < len(names) - 1 else None,
        }
        super().get()

    head = get


class SegmentIndexHandler(BaseHandler):
    """``/recordings/NAME/SEGMENT.json``: when each frame was taken and where it lies."""

    def initialize(self, archive: Archive) -> None:
        self.archive = archive

    def compute_etag(self) -> None:
        return None

    def get(self, camera: str, segment: str) -> None:
        path = self.archive.path(camera, segment)
        if path is None:
            self.fail(404, "no such recording")
            return
        try:
            index = self.archive.index(path)
        except MkvError as exc:
            self.fail(422, f"cannot read this recording: {exc}")
            return
        except OSError:
            self.fail(404, "no such recording")
            return
        recording = path.name.endswith(PART_SUFFIX)
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
        self.set_header("Content-Type", "application/json")
        self.set_header("Vary", "Accept-Encoding")
        self.set_no_cache()
        if len(data) > 1400 and "gzip" in self.request.headers.get("Accept-Encoding", ""):
            data = gzip.compress(data, compresslevel=5)
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
