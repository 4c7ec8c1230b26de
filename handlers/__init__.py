"""The one URL table of the server."""

from __future__ import annotations

import re
from typing import Any

from tornado.httputil import HTTPServerRequest
from tornado.routing import PathMatches, Rule

from cameras.feed import FrameFeed
from handlers.common import NotFoundHandler
from handlers.mjpeg import MjpegHandler
from handlers.pages import PageHandler, StaticHandler
from handlers.snapshot import SnapshotHandler
from handlers.status import StatusHandler
from handlers.ws import WsHandler

__all__ = ["NotFoundHandler", "routes"]


class ActionMatches(PathMatches):
    """``/?action=NAME``: the mjpg-streamer dialect that many front ends use."""

    def __init__(self, path: str, action: str) -> None:
        super().__init__(path)
        self.action = action.encode()

    def match(self, request: HTTPServerRequest) -> dict[str, Any] | None:
        if request.query_arguments.get("action", [None])[0] != self.action:
            return None
        return super().match(request)


def _paths(*paths: str) -> str:
    """A pattern for several paths, each with an optional trailing slash."""
    return "(?:" + "|".join(re.escape(p.rstrip("/")) for p in paths) + ")/?$"


def routes(
    feed: FrameFeed,
    *,
    static_path: str,
    snapshot_timeout_s: float,
    version: str,
    started_at: float,
    allow_origins: tuple[str, ...] = (),
) -> list[Rule]:
    """Every URL the server answers, in one place."""
    stream = {"feed": feed}
    snapshot = {"feed": feed, "timeout_s": snapshot_timeout_s}
    return [
        Rule(ActionMatches("/", "stream"), MjpegHandler, stream),
        Rule(ActionMatches("/", "snapshot"), SnapshotHandler, snapshot),
        Rule(PathMatches(r"/$"), PageHandler, {"path": static_path, "page": "index.html"}),
        Rule(PathMatches(_paths("/stream.mjpg", "/stream", "/video_feed")), MjpegHandler, stream),
        Rule(PathMatches(_paths("/snapshot.jpg", "/snapshot")), SnapshotHandler, snapshot),
        Rule(
            PathMatches(_paths("/status")),
            StatusHandler,
            {"feed": feed, "version": version, "started_at": started_at},
        ),
        Rule(PathMatches(_paths("/ws")), WsHandler, {"feed": feed, "allow_origins": allow_origins}),
        Rule(PathMatches(_paths("/viewer")), PageHandler, {"path": static_path, "page": "viewer.html"}),
        # /kiosk may be framed by any origin (a dashboard's iframe); to restrict
        # it, change frame-ancestors here, e.g. "frame-ancestors 'self' https://dash.example".
        Rule(
            PathMatches(_paths("/kiosk")),
            PageHandler,
            {
                "path": static_path,
                "page": "kiosk.html",
                "headers": {"Content-Security-Policy": "frame-ancestors *"},
            },
        ),
        Rule(PathMatches(r"/static/(.+)"), StaticHandler, {"path": static_path}),
    ]
