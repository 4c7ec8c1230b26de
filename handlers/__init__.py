"""The one URL table of the server."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import tornado.template
from tornado.httputil import HTTPServerRequest
from tornado.routing import PathMatches, Rule

from cameras.feed import FrameFeed
from handlers.common import NotFoundHandler
from handlers.metrics import MetricsHandler, make_registry
from handlers.mjpeg import MjpegHandler
from handlers.pages import PageHandler, RelativeRedirectHandler, StaticHandler
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


def _paths(prefix: str, *paths: str) -> str:
    """A pattern for several paths under ``prefix``, each with an optional trailing slash."""
    return re.escape(prefix) + "(?:" + "|".join(re.escape(p.rstrip("/")) for p in paths) + ")/?$"


def _camera_rules(
    prefix: str,
    feed: FrameFeed,
    *,
    loader: tornado.template.Loader,
    static_path: str,
    snapshot_timeout_s: float,
    status: dict[str, Any],
    cameras_link: str | None,
) -> list[Rule]:
    """The URLs of one camera under ``prefix`` (``""`` or ``/cameras/NAME``)."""
    stream = {"feed": feed}
    snapshot = {"feed": feed, "timeout_s": snapshot_timeout_s}
    values = {"camera": feed.name, "cameras_link": cameras_link}
    return [
        Rule(PathMatches(re.escape(prefix) + "/$"), PageHandler, _page(loader, "index.html", values, False)),
        Rule(PathMatches(_paths(prefix, "/stream.mjpg", "/stream", "/video_feed")), MjpegHandler, stream),
        Rule(PathMatches(_paths(prefix, "/snapshot.jpg", "/snapshot")), SnapshotHandler, snapshot),
        Rule(PathMatches(_paths(prefix, "/status")), StatusHandler, {"feed": feed, **status}),
        Rule(PathMatches(_paths(prefix, "/ws")), WsHandler, {"feed": feed}),
        Rule(PathMatches(_paths(prefix, "/viewer")), PageHandler, _page(loader, "viewer.html", values)),
        # /kiosk may be framed by any origin (a dashboard's iframe); to restrict
        # it, change frame_ancestors here, e.g. "'self' https://dash.example".
        Rule(
            PathMatches(_paths(prefix, "/kiosk")),
            PageHandler,
            _page(loader, "kiosk.html", values, frame_ancestors="*"),
        ),
        Rule(PathMatches(re.escape(prefix) + r"/static/(.+)"), StaticHandler, {"path": static_path}),
    ]


def _page(
    loader: tornado.template.Loader,
    page: str,
    values: dict[str, Any],
    slash_redirect: bool = True,
    frame_ancestors: str = "'none'",
) -> dict[str, Any]:
    return {
        "loader": loader,
        "page": page,
        "values": values,
        "slash_redirect": slash_redirect,
        "frame_ancestors": frame_ancestors,
    }


def routes(
    feeds: Mapping[str, FrameFeed],
    *,
    static_path: str,
    snapshot_timeout_s: float,
    version: str,
    started_at: float,
) -> list[Rule]:
    """Every URL the server answers, in one place.

    Each camera answers under ``/cameras/NAME/``; the first also at the short
    URLs (``/stream.mjpg``...).  ``/cameras/`` lists the cameras, and so does
    ``/`` when there are several; ``/status`` covers them all.
    """
    if not feeds:
        raise ValueError("a server needs at least one camera")
    loader = tornado.template.Loader(static_path, autoescape="xhtml_escape")
    first = next(iter(feeds.values()))
    several = len(feeds) > 1
    status = {"version": version, "started_at": started_at}
    common = {
        "loader": loader,
        "static_path": static_path,
        "snapshot_timeout_s": snapshot_timeout_s,
    }
    stream = {"feed": first}
    snapshot = {"feed": first, "timeout_s": snapshot_timeout_s}
    names = list(feeds)
    rules = [
        Rule(ActionMatches("/", "stream"), MjpegHandler, stream),
        Rule(ActionMatches("/", "snapshot"), SnapshotHandler, snapshot),
        Rule(PathMatches(_paths("", "/metrics")), MetricsHandler, {"registry": make_registry(feeds)}),
        Rule(PathMatches(r"/cameras$"), RelativeRedirectHandler, {"location": "cameras/"}),
        Rule(
            PathMatches(r"/cameras/$"),
            PageHandler,
            _page(loader, "cameras.html", {"cameras": names, "root": "../"}, False),
        ),
    ]
    if several:
        rules.append(
            Rule(
                PathMatches(r"/$"),
                PageHandler,
                _page(loader, "cameras.html", {"cameras": names, "root": ""}, False),
            )
        )
    # The short URLs: the first camera, but /status covers every camera.
    rules += _camera_rules("", first, cameras_link=None, status={**status, "feeds": feeds}, **common)
    for name, feed in feeds.items():
        prefix = f"/cameras/{name}"
        rules.append(
            Rule(PathMatches(re.escape(prefix) + "$"), RelativeRedirectHandler, {"location": f"{name}/"})
        )
        link = "../" if several else None
        rules += _camera_rules(prefix, feed, cameras_link=link, status=status, **common)
    return rules
