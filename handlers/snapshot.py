"""One JPEG: the newest frame, starting a cold camera and waiting for its first."""

from __future__ import annotations

import logging

from cameras.base import CameraError
from cameras.feed import FrameFeed
from handlers.base import BaseHandler
from handlers.cors import answer_preflight, cors_headers

log = logging.getLogger(__name__)


class SnapshotHandler(BaseHandler):
    """``GET``/``HEAD``: ``image/jpeg`` of the newest frame, or 503 with a short reason."""

    def initialize(self, feed: FrameFeed, timeout_s: float) -> None:
        self.feed = feed
        self.timeout_s = timeout_s

    def compute_etag(self) -> None:
        return None  # every snapshot is new; no conditional answers

    async def get(self) -> None:
        try:
            frame = await self.feed.snapshot(self.timeout_s)
        except TimeoutError:
            log.warning("snapshot: no frame from %s within %g s", self.feed.name, self.timeout_s)
            self.fail(503, f"Service Unavailable: {self.feed.snapshot_failure(self.timeout_s)}")
            return
        except CameraError as exc:
            self.fail(503, f"Service Unavailable: {exc}")
            return
        self.set_header("Content-Type", "image/jpeg")
        for name, value in cors_headers(self).items():
            self.set_header(name, value)
        self.set_no_cache()
        self.set_header("X-Timestamp", f"{frame.timestamp:.6f}")
        self.set_header("Content-Disposition", 'inline; filename="snapshot.jpg"')
        self.finish(frame.jpeg)

    head = get

    def options(self) -> None:
        answer_preflight(self)
