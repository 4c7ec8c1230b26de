"""``/status``: the state of the camera and its viewers as JSON."""

from __future__ import annotations

import json
import time

from cameras.feed import FrameFeed
from handlers.common import BaseHandler


class StatusHandler(BaseHandler):
    """``GET``/``HEAD``: a JSON object (see the README for the fields)."""

    def initialize(self, feed: FrameFeed, version: str, started_at: float) -> None:
        self.feed = feed
        self.version = version
        self.started_at = started_at

    def compute_etag(self) -> None:
        return None

    def get(self) -> None:
        body = {
            "version": self.version,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            **self.feed.status(),
        }
        self.set_header("Content-Type", "application/json")
        self.set_no_cache()
        self.finish(json.dumps(body, indent=2) + "\n")

    head = get
