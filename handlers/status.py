"""``/status``: the state of the cameras and their viewers as JSON."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

from feed import FrameFeed
from handlers.base import BaseHandler
from handlers.ws import MAX_CLIENT_MESSAGE_BYTES


class StatusHandler(BaseHandler):
    """``GET``/``HEAD``: a JSON object (see the README for the fields).

    The fields of ``feed``'s camera at the top level; with ``feeds`` (the
    server's ``/status``) also ``"cameras"``: every camera's fields by name.
    """

    def initialize(
        self,
        feed: FrameFeed,
        version: str,
        started_at: float,
        feeds: Mapping[str, FrameFeed] | None = None,
    ) -> None:
        self.feed = feed
        self.feeds = feeds
        self.version = version
        self.started_at = started_at

    def compute_etag(self) -> None:
        return None

    def get(self) -> None:
        body = {
            "version": self.version,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            # Which process answered, of several sharing a port (--reuse-port).
            "pid": os.getpid(),
            **self.feed.status(),
            "ws_max_message_bytes": MAX_CLIENT_MESSAGE_BYTES,
        }
        if self.feeds is not None:
            body["cameras"] = {name: feed.status() for name, feed in self.feeds.items()}
        self.set_header("Content-Type", "application/json")
        self.set_no_cache()
        self.finish(json.dumps(body, indent=2) + "\n")

    head = get
