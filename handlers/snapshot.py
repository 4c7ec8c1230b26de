"""One JPEG: the newest frame, starting a cold camera and waiting for its first."""

from __future__ import annotations

import logging

from frame import CameraError
from handlers.base import BaseHandler
from handlers.cors import answer_preflight, cors_headers
from handlers.viewing import BadRequest, variant_args
from outputs.variants import Variants

log = logging.getLogger(__name__)


class SnapshotHandler(BaseHandler):
    """``GET``/``HEAD``: ``image/jpeg`` of the newest frame, or 503 with a short reason.

    ``?width=W`` and ``?quality=Q`` ask for a variant (:mod:`outputs.variants`):
    its newest frame, or its first once started (it then runs on for its idle
    timeout, like a camera after a snapshot)."""

    def initialize(self, variants: Variants, timeout_s: float) -> None:
        self.variants = variants
        self.feed = variants.feed
        self.timeout_s = timeout_s

    def compute_etag(self) -> None:
        return None  # every snapshot is new; no conditional answers

    async def get(self) -> None:
        try:
            width, quality, _ = variant_args(self)
        except BadRequest as exc:
            self.fail(400, f"Bad Request: {exc}")
            return
        feed = self.feed
        try:
            if width is not None or quality is not None:
                variants = self.variants
                if width is not None and not variants.size_known():
                    await feed.snapshot(self.timeout_s)  # the camera's real size, to snap the width to
                feed, _ = variants.feed_for(variants.key_for(width, quality))
            frame = await feed.snapshot(self.timeout_s)
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
