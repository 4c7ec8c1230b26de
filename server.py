"""camstream: a live camera in the browser, from one Tornado process.

Composition root only: read the settings (command line, then environment,
then defaults); build the cameras (sources), their feeds and each feed's
outputs (variants, recorder, bus publisher), all by constructor arguments;
make the application over them; listen, and run until SIGINT or SIGTERM; then
close the feeds, which stop their cameras and close their outputs.

    python server.py                       # emulated camera on http://127.0.0.1:8080/
    CAMERA=files python server.py --source frames/ --fps 5
    python server.py --camera garage=opencv:0 --camera porch=mjpeg:http://192.0.2.10/video.mjpg
    python server.py --config cameras.toml
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.metadata
import logging
import os
import select
import signal
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

import handlers
from cameras import create_camera
from feed import FrameFeed
from frame import CameraError
from handlers.access import Access, redact
from handlers.limits import MAX_BODY_BYTES, MAX_HEADER_BYTES, ClientLimit
from listening import Listener
from logs import start_logging
from outputs.publisher import Publisher
from outputs.variants import DEFAULT_MAX_VARIANTS, Variants
from recording.recorder import Recorder
from settings import CameraSpec, Settings, __version__, parse_settings

log = logging.getLogger("camstream")


#: The asset folders, each with a file it must hold (a folder without it is not ours, or not whole).
ASSET_MARKERS: dict[str, str] = {"static": "style.css", "templates": "base.html"}


class AssetsMissing(Exception):
    """The pages' files (``static/``, ``templates/``) are in none of the places an install puts them."""


def _distribution() -> importlib.metadata.Distribution | None:
    """The installed ``camstream`` distribution that this very ``server.py`` belongs
    to (not another copy further along ``sys.path``), or None (a bare checkout)."""
    me = Path(__file__).resolve()
    for dist in importlib.metadata.distributions(name="camstream"):
        with contextlib.suppress(OSError):
            if Path(str(dist.locate_file("server.py"))).resolve() == me:
                return dist
    return None


def asset_candidates(folder: str) -> list[Path]:
    """Where ``folder`` (``"static"`` or ``"templates"``) may be, most likely first:

    - beside this file: a checkout, ``pip install -e .``;
    - where the distribution's RECORD says its data files went
      (``share/camstream/FOLDER`` under the venv, ``--user`` base or ``--prefix``);
    - ``share/camstream/FOLDER`` in this file's folder or one above it:
      ``pip install --target DIR`` moves the data files to ``DIR/share`` but its
      RECORD still names them from the temporary folder pip built in.

    Reads the file system (RECORD): call it at start, not per request."""
    here = Path(__file__).resolve().parent
    found = [here / folder]
    dist = _distribution()
    for file in (dist.files or []) if dist else []:
        if file.parent.name == folder and file.parent.parent.name == "camstream":
            found.append(Path(str(dist.locate_file(file))).resolve().parent)  # type: ignore[union-attr]
    found += [parent / "share" / "camstream" / folder for parent in (here, *here.parents)]
    return list(dict.fromkeys(found))


def asset_path(folder: str) -> str:
    """The ``static/`` or ``templates/`` folder of the pages, in whatever layout
    camstream was installed (see :func:`asset_candidates`); raises AssetsMissing,
    with a message for people, if it is nowhere.  Blocking (file system): at start."""
    candidates = asset_candidates(folder)
    for path in candidates:
        if (path / ASSET_MARKERS[folder]).is_file():
            return str(path)
    shown = ", ".join(str(p) for p in candidates[:3])
    raise AssetsMissing(
        f"the pages' {folder}/ folder is missing (no {folder}/{ASSET_MARKERS[folder]} in {shown}, ...): "
        "reinstall camstream (pip install .) or run server.py from its repository"
    )


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
    variants: Mapping[str, Variants] | None = None,
    listening: Callable[[], Mapping[str, Any]] | None = None,
) -> tornado.web.Application:
    """The Tornado application over the feeds (name to feed, in order; a lone
    feed is a server of one camera), their variants (by name; None: made here
    and attached to the feeds, :func:`make_variants`) and the recorders of the
    recording cameras (by name; their folders are served under ``/recordings/``);
    ``listening``: the listening sockets' status (``listening.Listener.status``),
    shown in ``/status`` and ``/metrics``."""
    if isinstance(feeds, FrameFeed):
        feeds = {feeds.name: feeds}
    if variants is None:
        variants = make_variants(settings, feeds)
    rules = handlers.routes(
        feeds,
        variants,
        static_path=asset_path("static"),
        template_path=asset_path("templates"),
        snapshot_timeout_s=settings.snapshot_timeout_s,
        version=__version__,
        started_at=time.monotonic(),
        base_path=settings.base_path,
        recorders=recorders,
        frame_ancestors=settings.frame_ancestors,
        listening=listening,
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


def driver_options(settings: Settings, spec: CameraSpec, viewers: Callable[[], int]) -> dict[str, Any]:
    """What a camera's driver is built with beside its config: a ``nats``
    camera's bus prefix, credentials and viewer count (``viewers``, told to the
    origin); nothing for the others."""
    if spec.driver != "nats":
        return {}
    return {"prefix": settings.bus_prefix, "auth": settings.bus_auth, "viewers": viewers}


def make_feeds(settings: Settings) -> dict[str, FrameFeed]:
    """Build every camera (not started) and its feed, by name; raises CameraError
    naming the camera at fault (the cameras already built are closed)."""
    specs = settings.cameras
    feeds: dict[str, FrameFeed] = {}
    try:
        for spec in specs:
            viewers = lambda name=spec.name: feeds[name].viewer_count  # noqa: E731  (bound once built)
            try:
                camera = create_camera(spec.driver, spec.config, **driver_options(settings, spec, viewers))
            except CameraError as exc:
                prefix = f"camera {spec.name!r}: " if len(specs) > 1 else ""
                raise CameraError(prefix + str(spec.explain(exc))) from exc
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


def make_variants(settings: Settings, feeds: Mapping[str, FrameFeed]) -> dict[str, Variants]:
    """Each camera's variants (and their adaptation), attached to its feed, by name;
    a feed of no camera of ``settings`` (a test's) gets the default cap."""
    caps = {spec.name: spec.max_variants for spec in settings.cameras}
    return {
        name: Variants(feed, caps.get(name, DEFAULT_MAX_VARIANTS)).attach() for name, feed in feeds.items()
    }


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
    file work, on a worker thread) and attach it to its camera's feed with a
    hold, which keeps the camera running for it.  Raises RecordingError naming
    the camera."""
    loop = asyncio.get_running_loop()
    for name, recorder in recorders.items():
        try:
            await loop.run_in_executor(None, recorder.start)
            feeds[name].attach(recorder, hold=True)
        except (OSError, CameraError) as exc:
            if recorder.running:
                await loop.run_in_executor(None, recorder.finish)
            reason = getattr(exc, "strerror", None) or exc
            raise RecordingError(f"camera {name!r}: cannot record in {recorder.folder}: {reason}") from exc


def start_publishing(settings: Settings, feeds: Mapping[str, FrameFeed]) -> None:
    """With ``--publish``, a bus publisher for every camera, attached to its feed
    (the feed closes it).  Raises CameraError (no NATS client)."""
    for feed in feeds.values():
        if settings.publish:
            Publisher(feed, list(settings.publish), settings.bus_prefix, settings.bus_auth).start()


async def close_feeds(feeds: Mapping[str, FrameFeed], timeout_s: float = 10.0) -> None:
    """Close every feed and wait (up to ``timeout_s``) for the cameras to stop and
    their outputs to finish, on their worker threads; a camera that will not let
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


#: Linux's ioctl that reads an interface's IPv4 address.
_SIOCGIFADDR = 0x8915


def local_addresses() -> list[str]:
    """This machine's interface addresses other than loopback: IPv4 first, then
    global IPv6 (no link-local ones, which need a zone), from the kernel's
    interface table (Linux: an ioctl per interface and ``/proc/net/if_inet6``),
    never DNS or the network.  Empty where the platform tells nothing.  Blocking
    (system calls, a small /proc read): call it off the IOLoop."""
    found: list[str] = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:  # no IPv4 address on this interface
                continue
            address = socket.inet_ntoa(packed[20:24])
            if not address.startswith("127."):
                found.append(address)
    with contextlib.suppress(OSError), open("/proc/net/if_inet6", encoding="ascii") as table:
        for line in table:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "00":  # scope 00: global
                continue
            address = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(fields[0]))
            found.append(address)
    return list(dict.fromkeys(found))


def server_urls(
    sockets: Sequence[socket.socket], scheme: str, base_path: str, addresses: Sequence[str]
) -> list[str]:
    """The URLs a person can open, for the startup lines: each listening socket's
    address, except that a wildcard one (``0.0.0.0``, ``::``), which no browser
    opens, becomes the machine's ``addresses`` of its family (IPv4, or both for
    ``::``) then ``localhost``.  Never empty."""
    base = base_path + "/"
    hosts: list[str] = []
    for sock in sockets:
        host = sock.getsockname()[0]
        if host == "0.0.0.0":
            hosts += [a for a in addresses if ":" not in a] + ["localhost"]
        elif host == "::":
            hosts += [*addresses, "localhost"]
        else:
            hosts.append(host)
    port = sockets[0].getsockname()[1]
    shown = (f"[{host}]" if ":" in host else host for host in dict.fromkeys(hosts))
    urls = [f"{scheme}://{host}:{port}{base}" for host in shown]
    # localhost last: the addresses are what another machine opens.
    return sorted(urls, key=lambda url: "//localhost:" in url)


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"server.py: error: {message}\n")
    raise SystemExit(2)


async def open_server(
    settings: Settings,
) -> tuple[dict[str, FrameFeed], dict[str, Recorder], list[socket.socket], ssl.SSLContext | None]:
    """Everything ``serve`` needs before it answers: the pages' files checked,
    the feeds built, the port bound, TLS loaded, the recorders and publishers
    started and attached.  On any failure it undoes what it made and exits 2
    with one line (:func:`_fail`)."""
    try:
        for folder in ASSET_MARKERS:
            asset_path(folder)
        feeds = make_feeds(settings)
    except (AssetsMissing, CameraError) as exc:
        _fail(str(exc))
    try:
        sockets = bind_sockets(settings.port, settings.host, reuse_port=settings.reuse_port)
    except (OSError, socket.gaierror) as exc:
        await close_feeds(feeds)
        _fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}")
    try:
        tls = tls_context(settings.certfile, settings.keyfile) if settings.certfile else None
        recorders = make_recorders(settings)
        await start_recording(feeds, recorders)
        start_publishing(settings, feeds)
    except (OSError, ssl.SSLError) as exc:
        await close_feeds(feeds)
        _fail(f"--certfile {settings.certfile}: {getattr(exc, 'strerror', None) or exc}")
    except RecordingError as exc:
        await close_feeds(feeds)
        _fail(str(exc))
    except CameraError as exc:
        await close_feeds(feeds)
        _fail(f"--publish: {exc}")
    return feeds, recorders, sockets, tls


#: What a second SIGINT or SIGTERM writes to standard error (in the log's words) as it ends the process.
HARD_EXIT_NOTE = b"WARNING camstream: second signal: exiting at once\n"


def _write_stderr_if_ready(data: bytes) -> None:
    """Write ``data`` to file descriptor 2 if that will not block (a full pipe, a
    stalled terminal: then nothing is written), with no lock taken: safe in a
    signal handler.  Never raises."""
    with contextlib.suppress(OSError, ValueError):
        if select.select([], [2], [], 0)[1]:
            os.write(2, data)


def stop_on_signals() -> asyncio.Event:
    """An event set by the first SIGINT or SIGTERM (on the running loop); a second
    one ends the process at once with status 1, even while the shutdown is
    blocked or the main thread holds a lock (a log call's): its handler writes
    :data:`HARD_EXIT_NOTE` straight to standard error (unless that would block)
    and calls ``os._exit``, taking no lock.  Call on the loop's thread."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def hard_exit(signum: int, frame: object) -> None:
        # A plain signal handler, not the loop's: it runs even while the shutdown
        # is blocked (a camera that will not let go), between two bytecodes of
        # whatever the main thread was doing, which may hold a lock (the log
        # queue's, inside log.info): so it takes none, no logging.
        _write_stderr_if_ready(HARD_EXIT_NOTE)
        os._exit(1)

    def signalled() -> None:
        stop.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
            signal.signal(sig, hard_exit)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signalled)
    return stop


async def announce(
    settings: Settings, feeds: Mapping[str, FrameFeed], sockets: Sequence[socket.socket], tls: bool
) -> None:
    """The startup lines: where each camera is, and a warning when anyone who can
    reach the port may watch.  The interface list is read on a worker thread."""
    if not (settings.auth or settings.token) and not _loopback(settings.host):
        log.warning(
            "listening on %s without --auth or --token: anyone who can reach this port can watch",
            settings.host,
        )
    addresses = await asyncio.get_running_loop().run_in_executor(None, local_addresses)
    urls = server_urls(sockets, "https" if tls else "http", settings.base_path, addresses)
    url = urls[0]
    if len(feeds) == 1:
        log.info("serving the %s camera on %s (stream: %sstream.mjpg)", next(iter(feeds)), url, url)
    else:
        log.info("serving %d cameras on %s (%s)", len(feeds), url, ", ".join(feeds))
        for name in feeds:
            log.info("  %s: %scameras/%s/ (stream: %scameras/%s/stream.mjpg)", name, url, name, url, name)
    if len(urls) > 1:
        log.info("also on %s", ", ".join(urls[1:]))


async def serve(settings: Settings) -> None:
    """Run the server until SIGINT or SIGTERM, then close the feeds (their cameras
    stop, their outputs finish) and the connections."""
    feeds, recorders, bound, tls = await open_server(settings)
    listener = Listener(bound, tls=tls is not None)  # pauses, not spins, when out of descriptors
    sockets = listener.sockets
    server = HTTPServer(
        make_app(settings, feeds, recorders, listening=listener.status),
        xheaders=False,
        ssl_options=tls,
        idle_connection_timeout=60,
        body_timeout=10,
        max_header_size=MAX_HEADER_BYTES,
        max_body_size=MAX_BODY_BYTES,
    )
    server.add_sockets(sockets)
    stop = stop_on_signals()
    await announce(settings, feeds, sockets, tls is not None)
    await stop.wait()
    log.info("shutting down")
    listener.close()
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
