"""The one URL table of the server."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tornado.template
from tornado.httputil import HTTPServerRequest
from tornado.routing import Matcher, PathMatches, Rule

from feed import FrameFeed
from handlers.base import NotFoundHandler
from handlers.kiosks import HeartbeatHandler, Kiosks
from handlers.metrics import MetricsHandler, make_registry
from handlers.mjpeg import MjpegHandler
from handlers.pages import FaviconHandler, PageHandler, RelativeRedirectHandler, StaticHandler
from handlers.recordings import (
    PlayerPageHandler,
    RecordingsJsonHandler,
    RecordingsPageHandler,
    SegmentFileHandler,
    SegmentIndexHandler,
)
from handlers.snapshot import SnapshotHandler
from handlers.status import StatusHandler
from handlers.ws import WsHandler
from outputs.variants import Variants
from recording.archive import Archive
from recording.recorder import SEGMENT_PATTERN, Recorder

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


def _prefixed(matcher: Matcher, base_path: str) -> PathMatches:
    """A copy of ``matcher`` (a PathMatches or subclass) that matches its paths under ``base_path``."""
    if not isinstance(matcher, PathMatches):
        raise TypeError(f"cannot put {matcher!r} under a base path: only path patterns can be")
    moved = copy.copy(matcher)  # keeps what a subclass adds (ActionMatches' action)
    # The same groups, in the same order: the handlers get the same arguments.
    PathMatches.__init__(moved, re.escape(base_path) + "(?:" + matcher.regex.pattern.removeprefix("^") + ")")
    return moved


def under_base_path(rules: Sequence[Rule | tuple | list], base_path: str) -> list[Rule]:
    """``rules`` answering under ``base_path`` (``--base-path``: ``"/webcam"``, no
    trailing slash; ``""`` leaves them as they are), for a proxy that passes
    the path unchanged.  ``/`` (with any query) and ``base_path`` itself redirect
    to ``base_path/``; every other path outside is left to the 404 handler.
    Applied to the whole table, so every rule moves, whoever added it.
    """
    if not base_path:
        return [rule if isinstance(rule, Rule) else _rule(rule) for rule in rules]
    moved = []
    for rule in rules:
        rule = rule if isinstance(rule, Rule) else _rule(rule)
        moved.append(Rule(_prefixed(rule.matcher, base_path), rule.target, rule.target_kwargs, rule.name))
    home = {"location": base_path + "/"}
    moved.append(Rule(PathMatches(r"/$"), RelativeRedirectHandler, home))
    moved.append(Rule(PathMatches(re.escape(base_path) + "$"), RelativeRedirectHandler, home))
    return moved


def _rule(spec: tuple | list) -> Rule:
    """A ``(pattern, handler[, kwargs[, name]])`` tuple as Tornado's Application reads it."""
    matcher = PathMatches(spec[0]) if isinstance(spec[0], str) else spec[0]
    return Rule(matcher, *spec[1:])


def _paths(prefix: str, *paths: str) -> str:
    """A pattern for several paths under ``prefix``, each with an optional trailing slash."""
    return re.escape(prefix) + "(?:" + "|".join(re.escape(p.rstrip("/")) for p in paths) + ")/?$"


def _camera_rules(
    prefix: str,
    variants: Variants,
    *,
    loader: tornado.template.Loader,
    static_path: str,
    snapshot_timeout_s: float,
    status: dict[str, Any],
    cameras_link: str | None,
    recordings_link: str | None = None,
    frame_ancestors: str = "*",
    kiosks: Kiosks | None = None,
) -> list[Rule]:
    """The URLs of one camera (``variants.feed``'s) under ``prefix`` (``""`` or
    ``/cameras/NAME``); its pages link to the camera list and, while any camera
    records, to the recordings (relative links, None: no link);
    ``frame_ancestors`` says who may frame ``/kiosk`` (``--frame-ancestors``);
    ``kiosks``: the server's registry of kiosks (``heartbeat``, the sockets, the status)."""
    feed = variants.feed
    kiosks = kiosks if kiosks is not None else Kiosks()
    stream = {"variants": variants}
    snapshot = {"variants": variants, "timeout_s": snapshot_timeout_s}
    values = {
        "camera": feed.name,
        "cameras_link": cameras_link,
        "recordings_link": recordings_link,
        "assets": "static/",
    }
    return [
        Rule(PathMatches(re.escape(prefix) + "/$"), PageHandler, _page(loader, "index.html", values, False)),
        Rule(PathMatches(_paths(prefix, "/stream.mjpg", "/stream", "/video_feed")), MjpegHandler, stream),
        Rule(PathMatches(_paths(prefix, "/snapshot.jpg", "/snapshot")), SnapshotHandler, snapshot),
        Rule(
            PathMatches(_paths(prefix, "/status")), StatusHandler, {"feed": feed, "kiosks": kiosks, **status}
        ),
        Rule(PathMatches(_paths(prefix, "/ws")), WsHandler, {**stream, "kiosks": kiosks}),
        Rule(
            PathMatches(_paths(prefix, "/heartbeat")),
            HeartbeatHandler,
            {"kiosks": kiosks, "camera": feed.name},
        ),
        Rule(PathMatches(_paths(prefix, "/viewer")), PageHandler, _page(loader, "viewer.html", values)),
        # /kiosk may be framed (a dashboard's iframe) by whom --frame-ancestors says.
        Rule(
            PathMatches(_paths(prefix, "/kiosk")),
            PageHandler,
            _page(loader, "kiosk.html", values, frame_ancestors=frame_ancestors),
        ),
        Rule(PathMatches(re.escape(prefix) + r"/static/(.+)"), StaticHandler, {"path": static_path}),
    ]


#: A segment's name in a URL, as a group.
_SEGMENT = f"({SEGMENT_PATTERN})"


def _recording_rules(folders: Mapping[str, Path | None], loader: tornado.template.Loader) -> list[Rule]:
    """``/recordings/``: the list, its JSON, and per recorded camera each
    segment's player, index and file (``folders``: every camera's recordings
    folder by name, None for a camera that does not record)."""
    archive = Archive(folders)
    listing = _page(loader, "recordings.html", {"assets": "../static/"}, False)
    rules = [
        Rule(PathMatches(r"/recordings$"), RelativeRedirectHandler, {"location": "recordings/"}),
        Rule(PathMatches(r"/recordings/$"), RecordingsPageHandler, {"archive": archive, **listing}),
        Rule(PathMatches(r"/recordings/index\.json$"), RecordingsJsonHandler, {"archive": archive}),
    ]
    for name, folder in archive.folders.items():
        if folder is None:
            continue
        camera = "/recordings/(" + re.escape(name) + ")/"
        player = _page(loader, "player.html", {"assets": "../../static/"}, True)
        rules += [
            Rule(PathMatches(camera + _SEGMENT + r"/?$"), PlayerPageHandler, {"archive": archive, **player}),
            Rule(PathMatches(camera + _SEGMENT + r"\.json$"), SegmentIndexHandler, {"archive": archive}),
            Rule(
                PathMatches(re.escape(f"/recordings/{name}/") + f"({SEGMENT_PATTERN}\\.mkv)$"),
                SegmentFileHandler,
                {"path": str(folder), "camera": name},
            ),
        ]
    return rules


def _folder(recorder: Recorder | None) -> Path | None:
    return recorder.folder if recorder is not None else None


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


def _site_rules(
    feeds: Mapping[str, FrameFeed],
    first: Variants,
    loader: tornado.template.Loader,
    static_path: str,
    snapshot_timeout_s: float,
    recording: bool,
    kiosks: Kiosks | None = None,
    listening: Callable[[], Mapping[str, Any]] | None = None,
) -> list[Rule]:
    """The URLs of the server as a whole: the favicon, the mjpg-streamer
    aliases of the first camera, ``/metrics``, and the camera list (at
    ``/cameras/``, and at ``/`` when there are several cameras).  Reads the
    favicon (blocking: at start)."""
    names = list(feeds)
    icon = (Path(static_path) / "favicon.ico").read_bytes()

    def camera_list(root: str, assets: str) -> dict[str, Any]:
        values = {"cameras": names, "root": root, "assets": assets, "recording": recording}
        return _page(loader, "cameras.html", values, False)

    rules = [
        Rule(PathMatches(r"/favicon\.ico$"), FaviconHandler, {"icon": icon}),
        Rule(ActionMatches("/", "stream"), MjpegHandler, {"variants": first}),
        Rule(
            ActionMatches("/", "snapshot"),
            SnapshotHandler,
            {"variants": first, "timeout_s": snapshot_timeout_s},
        ),
        Rule(
            PathMatches(_paths("", "/metrics")),
            MetricsHandler,
            {"registry": make_registry(feeds, kiosks, listening)},
        ),
        Rule(PathMatches(r"/cameras$"), RelativeRedirectHandler, {"location": "cameras/"}),
        Rule(PathMatches(r"/cameras/$"), PageHandler, camera_list("../", "../static/")),
    ]
    if len(feeds) > 1:
        rules.append(Rule(PathMatches(r"/$"), PageHandler, camera_list("", "static/")))
    return rules


def routes(
    feeds: Mapping[str, FrameFeed],
    variants: Mapping[str, Variants],
    *,
    static_path: str,
    template_path: str,
    snapshot_timeout_s: float,
    version: str,
    started_at: float,
    base_path: str = "",
    recorders: Mapping[str, Recorder] | None = None,
    frame_ancestors: str = "*",
    listening: Callable[[], Mapping[str, Any]] | None = None,
) -> list[Rule]:
    """Every URL the server answers, in one place; all of them under ``base_path``
    if given (see :func:`under_base_path`).  ``variants``: each camera's (by
    name, as ``feeds``), which its stream and snapshot handlers serve;
    ``listening``: the listening sockets' status, in ``/status`` and ``/metrics``;
    ``frame_ancestors``: the CSP source list of who may frame ``/kiosk`` (the
    other pages: nobody).  Reads the favicon from ``static_path`` (blocking:
    at start).

    Each camera answers under ``/cameras/NAME/``; the first also at the short
    URLs (``/stream.mjpg``...).  ``/cameras/`` lists the cameras, and so does
    ``/`` when there are several; ``/status`` covers them all.  ``recorders``:
    the recorder of each recording camera, by name.
    """
    recorders = recorders or {}
    if not feeds:
        raise ValueError("a server needs at least one camera")
    loader = tornado.template.Loader(template_path, autoescape="xhtml_escape")
    first = variants[next(iter(feeds))]
    status = {"version": version, "started_at": started_at, "listening": listening}
    kiosks = Kiosks()  # one per application: every camera's kiosks
    common = {
        "kiosks": kiosks,
        "loader": loader,
        "static_path": static_path,
        "snapshot_timeout_s": snapshot_timeout_s,
        "frame_ancestors": frame_ancestors,
    }
    recording = any(recorder is not None for recorder in recorders.values())
    rules = _site_rules(feeds, first, loader, static_path, snapshot_timeout_s, recording, kiosks, listening)
    rules += _recording_rules({name: _folder(recorders.get(name)) for name in feeds}, loader)
    # The short URLs: the first camera, but /status covers every camera.
    rules += _camera_rules(
        "",
        first,
        cameras_link="cameras/",
        recordings_link="recordings/" if recording else None,
        status={**status, "feeds": feeds},
        **common,
    )
    for name in feeds:
        prefix = f"/cameras/{name}"
        rules.append(
            Rule(PathMatches(re.escape(prefix) + "$"), RelativeRedirectHandler, {"location": f"{name}/"})
        )
        rules += _camera_rules(
            prefix,
            variants[name],
            cameras_link="../",
            recordings_link="../../recordings/" if recording else None,
            status=status,
            **common,
        )
    return under_base_path(rules, base_path)
