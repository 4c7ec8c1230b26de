"""``/status``: the state of the cameras and their viewers as JSON."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from feed import FrameFeed
from handlers.base import BaseHandler
from handlers.kiosks import Kiosks
from handlers.ws import MAX_CLIENT_MESSAGE_BYTES


def finite(value: Any) -> Any:
    """``value`` (a JSON-ready status: dicts, lists, numbers, strings) with every float
    that is not finite (NaN, infinities) replaced by None, so that it is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


class StatusHandler(BaseHandler):
    """``GET``/``HEAD``: a JSON object (see the README for the fields).

    The fields of ``feed``'s camera at the top level; with ``feeds`` (the
    server's ``/status``) also ``"cameras"``: every camera's fields by name.
    ``"kiosks"``: the kiosks heard from (:mod:`handlers.kiosks`), of every
    camera on the server's ``/status``, of ``feed``'s on a camera's own.
    """

    def initialize(
        self,
        feed: FrameFeed,
        version: str,
        started_at: float,
        feeds: Mapping[str, FrameFeed] | None = None,
        kiosks: Kiosks | None = None,
        listening: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.feed = feed
        self.kiosks = kiosks
        self.listening = listening
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
        if self.listening is not None:
            body["listening"] = dict(self.listening())
        if self.kiosks is not None:
            body["kiosks"] = self.kiosks.status(None if self.feeds is not None else self.feed.name)
        self.set_header("Content-Type", "application/json")
        self.set_no_cache()
        # Strict JSON whatever a source said: no NaN or Infinity (JSON.parse refuses them).
        self.finish(json.dumps(finite(body), indent=2, allow_nan=False) + "\n")

    head = get
