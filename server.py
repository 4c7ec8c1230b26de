"""camstream: a live camera in the browser, from one Tornado process.

Composition root only: read the settings (command line, then environment,
then defaults), build the cameras and their feeds, make the application,
listen, and run until SIGINT or SIGTERM; then stop the feeds and the cameras.

    python server.py                       # emulated camera on http://127.0.0.1:8080/
    CAMERA=files python server.py --source frames/ --fps 5
    python server.py --camera garage=opencv:0 --camera porch=mjpeg:http://192.0.2.10/video.mjpg
    python server.py --config cameras.toml
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

import handlers
from cameras import CameraError, create_camera
from cameras.feed import FrameFeed
from handlers.access import Access, redact
from handlers.limits import MAX_BODY_BYTES, MAX_HEADER_BYTES, ClientLimit
from logs import start_logging
from recording.recorder import Recorder
from settings import Settings, __version__, parse_settings

log = logging.getLogger("camstream")


def asset_path(folder: str) -> str:
    """``static/`` or ``templates/`` beside this file, or where ``pip install .`` put it."""
    here = Path(__file__).resolve().parent / folder
    if here.is_dir():
        return str(here)
    return str(Path(sys.prefix) / "share" / "camstream" / folder)


# -- the application ----------------------------------------------------------
def log_request(handler: tornado.web.RequestHandler) -> None:
    """Requests at DEBUG (a dashboard polling snapshots must not flood the log),
    client errors at INFO, server errors at WARNING."""
    status = handler.get_status()
    level = logging.DEBUG if status < 400 else logging.INFO if status < 500 else logging.WARNING
    request = handler.request
    logging.getLogger("tornado.access").log(
        level,
        "%d %s %s (%s) %.1f ms",
        status,
        request.method,
        redact(request.uri or ""),
        request.remote_ip,
        1000.0 * request.request_time(),
    )


def make_app(
    settings: Settings,
    feeds: FrameFeed | Mapping[str, FrameFeed],
    recorders: Mapping[str, Recorder] | None = None,
) -> tornado.web.Application:
    """The Tornado application over the feeds (name to feed, in order; a lone
    feed is a server of one camera) and the recorders of the recording cameras
    (by name; their folders are served under ``/recordings/``)."""
    if isinstance(feeds, FrameFeed):
        feeds = {feeds.name: feeds}
    rules = handlers.routes(
        feeds,
        static_path=asset_path("static"),
        template_path=asset_path("templates"),
        snapshot_timeout_s=settings.snapshot_timeout_s,
        version=__version__,
        started_at=time.monotonic(),
        base_path=settings.base_path,
        recorders=recorders,
    )
    return tornado.web.Application(
        rules,
        default_handler_class=handlers.NotFoundHandler,
        log_function=log_request,
        access=Access(basic=settings.auth, token=settings.token),
        allow_origins=frozenset(settings.allow_origins),
        client_limit=ClientLimit(list(feeds.values()), settings.max_clients),
        websocket_ping_interval=20,
        websocket_ping_timeout=20,  # Tornado 6.6 refuses (and warns about) a timeout above the interval
    )


def make_feeds(settings: Settings) -> dict[str, FrameFeed]:
    """Build every camera (not started) and its feed, by name; raises CameraError
    naming the camera at fault (the cameras already built are closed)."""
    specs = settings.cameras
    feeds: dict[str, FrameFeed] = {}
    try:
        for spec in specs:
            try:
                camera = create_camera(spec.driver, spec.config)
            except CameraError as exc:
                prefix = f"camera {spec.name!r}: " if len(specs) > 1 else ""
                raise CameraError(prefix + str(exc)) from exc
            feeds[spec.name] = FrameFeed(
                camera,
                name=spec.name,
                idle_timeout_s=settings.idle_timeout_s,
                stall_timeout_s=settings.stall_timeout_s,
            )
    except CameraError:
        for feed in feeds.values():
            feed.close()
        raise
    return feeds


def make_recorders(settings: Settings) -> dict[str, Recorder]:
    """A recorder (not started) for each camera that records, by name."""
    return {
        spec.name: Recorder(spec.name, spec.record, fps=spec.config.fps)
        for spec in settings.cameras
        if spec.record
    }


class RecordingError(Exception):
    """A camera cannot record (its folder, or the camera itself); the message is for people."""


async def start_recording(feeds: Mapping[str, FrameFeed], recorders: Mapping[str, Recorder]) -> None:
    """Start each recorder (its folder checked, parts left by a crash finished:
    file work, on a worker thread) and attach it to its camera's feed, which
    keeps the camera running for it.  Raises RecordingError naming the camera."""
    loop = asyncio.get_running_loop()
    for name, recorder in recorders.items():
        try:
            await loop.run_in_executor(None, recorder.start)
            feeds[name].attach(recorder)
        except (OSError, CameraError) as exc:
            if recorder.running:
                await loop.run_in_executor(None, recorder.close)
            reason = getattr(exc, "strerror", None) or exc
            raise RecordingError(f"camera {name!r}: cannot record in {recorder.folder}: {reason}") from exc


async def close_feeds(feeds: Mapping[str, FrameFeed], timeout_s: float = 10.0) -> None:
    """Close every feed and wait (up to ``timeout_s``) for the cameras to stop and
    the recorders to finish, on their worker threads; a camera that will not let
    go is logged and left behind (its thread does not hold up the exit)."""
    closing = [done for done in (feed.close() for feed in feeds.values()) if done is not None]
    if not closing:
        return
    _, pending = await asyncio.wait(closing, timeout=timeout_s)
    if pending:
        log.warning("%d camera(s) did not stop within %g s; exiting anyway", len(pending), timeout_s)


def make_feed(settings: Settings) -> FrameFeed:
    """The feed of the first camera alone (a server of one camera)."""
    first = settings.cameras[0]
    return make_feeds(replace(settings, cameras=(first,)))[first.name]


def tls_context(certfile: str, keyfile: str | None) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or newer) from PEM files; raises OSError or SSLError."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"server.py: error: {message}\n")
    raise SystemExit(2)


async def serve(settings: Settings) -> None:
    """Run the server until SIGINT or SIGTERM."""
    try:
        feeds = make_feeds(settings)
    except CameraError as exc:
        _fail(str(exc))
    try:
        sockets = bind_sockets(settings.port, settings.host)
    except (OSError, socket.gaierror) as exc:
        await close_feeds(feeds)
        _fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}")
    tls = None
    if settings.certfile:
        try:
            tls = tls_context(settings.certfile, settings.keyfile)
        except (OSError, ssl.SSLError) as exc:
            await close_feeds(feeds)
            _fail(f"--certfile {settings.certfile}: {getattr(exc, 'strerror', None) or exc}")
    recorders = make_recorders(settings)
    try:
        await start_recording(feeds, recorders)
    except RecordingError as exc:
        await close_feeds(feeds)
        _fail(str(exc))
    app = make_app(settings, feeds, recorders)
    server = HTTPServer(
        app,
        xheaders=False,
        ssl_options=tls,
        idle_connection_timeout=60,
        body_timeout=10,
        max_header_size=MAX_HEADER_BYTES,
        max_body_size=MAX_BODY_BYTES,
    )
    server.add_sockets(sockets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def hard_exit(signum: int, frame: object) -> None:
        # A plain signal handler, not the loop's: it runs even while the shutdown
        # is blocked (a camera that will not let go), between two bytecodes.
        log.warning("second signal: exiting at once")  # queued: written if the writer gets to it
        os._exit(1)

    def signalled() -> None:
        stop.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
            signal.signal(sig, hard_exit)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signalled)
    if not (settings.auth or settings.token) and not _loopback(settings.host):
        log.warning(
            "listening on %s without --auth or --token: anyone who can reach this port can watch",
            settings.host,
        )
    scheme = "https" if tls else "http"
    seen = set()
    for sock in sockets:
        host, port = sock.getsockname()[:2]
        base = settings.base_path + "/"
        url = f"{scheme}://[{host}]:{port}{base}" if ":" in host else f"{scheme}://{host}:{port}{base}"
        if url in seen:
            continue
        seen.add(url)
        if len(feeds) == 1:
            log.info("serving the %s camera on %s (stream: %sstream.mjpg)", next(iter(feeds)), url, url)
        else:
            log.info("serving %d cameras on %s (%s)", len(feeds), url, ", ".join(feeds))
            for name in feeds:
                log.info("  %s: %scameras/%s/ (stream: %scameras/%s/stream.mjpg)", name, url, name, url, name)
    await stop.wait()
    log.info("shutting down")
    server.stop()
    await close_feeds(feeds)
    await asyncio.wait_for(server.close_all_connections(), timeout=2.0)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python server.py`` and of the ``camstream`` command."""
    settings = parse_settings(argv)
    writer = start_logging(settings.log_level)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(settings))
    finally:
        writer.stop()


if __name__ == "__main__":
    main()
