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

import argparse
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

import handlers
from cameras import DRIVERS, CameraConfig, CameraError, create_camera
from cameras.config import CameraSpec, check_unique, load_config, parse_camera_arg
from cameras.feed import FrameFeed
from handlers.access import Access, redact
from handlers.cors import normalize_origin
from handlers.limits import MAX_BODY_BYTES, MAX_HEADER_BYTES, ClientLimit
from handlers.pages import clean_prefix
from recording.recorder import Recorder, RecordSettings, parse_age, parse_size

__version__ = "0.1.0"

log = logging.getLogger("camstream")

ENV_PREFIX = "CAMSTREAM_"
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Settings:
    """Everything the server is told at start; built once in :func:`main`."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: The driver and source of the one camera when ``cameras`` is empty.
    camera: str = "emulated"
    source: str | None = None
    fps: float = 30.0
    width: int = 640
    height: int = 480
    quality: int = 80
    idle_timeout_s: float = 10.0
    snapshot_timeout_s: float = 5.0
    log_level: str = "info"
    #: Origins (``scheme://host[:port]``) allowed to open ``/ws`` besides the page's own.
    allow_origins: tuple[str, ...] = ()
    #: ``USER:PASSWORD`` for HTTP Basic authentication, or None.
    auth: str | None = None
    #: An access token (``?token=`` or ``Authorization: Bearer``), or None.
    token: str | None = None
    #: TLS certificate chain and private key (PEM); HTTPS and WSS when set.
    certfile: str | None = None
    keyfile: str | None = None
    #: Streams (MJPEG and WebSocket, all cameras) at once; more get 503.
    max_clients: int = 500
    #: A viewer that takes no bytes for this long is disconnected.
    stall_timeout_s: float = 30.0
    #: Every camera of the server, in order (the first also answers at the short
    #: URLs); empty means the one camera of ``camera`` and ``source``.
    cameras: tuple[CameraSpec, ...] = ()
    #: ``--record``: how every camera records unless its config says otherwise.
    record: RecordSettings | None = None
    #: Every URL under this path (``/webcam``, no trailing slash), for a reverse
    #: proxy that passes the path unchanged; ``""``: at the root.
    base_path: str = ""

    def camera_config(self) -> CameraConfig:
        """The size, rate and quality every camera gets unless it says otherwise."""
        return CameraConfig(
            name=self.camera,
            source=self.source,
            width=self.width,
            height=self.height,
            fps=self.fps,
            quality=self.quality,
        )

    def camera_specs(self) -> tuple[CameraSpec, ...]:
        """The cameras to run: ``cameras``, or the one of ``camera`` and ``source``."""
        if self.cameras:
            return self.cameras
        return (CameraSpec(self.camera, self.camera, self.camera_config(), self.record),)


def asset_path(folder: str) -> str:
    """``static/`` or ``templates/`` beside this file, or where ``pip install .`` put it."""
    here = Path(__file__).resolve().parent / folder
    if here.is_dir():
        return str(here)
    return str(Path(sys.prefix) / "share" / "camstream" / folder)


# -- command line -------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One clear line and status 2, no usage dump (control characters of the
        offending value shown escaped, so the message stays one line)."""
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        self.exit(2, f"{self.prog}: error: {shown}\n")


def _number(kind: type, low: float, high: float, what: str):
    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not (low <= value <= high) or value != value:  # value != value: NaN
            raise argparse.ArgumentTypeError(f"{text!r} is out of range ({what})")
        return value

    return convert


def _credentials(text: str) -> str:
    user, colon, password = text.partition(":")
    if not colon or not user or not password:
        raise argparse.ArgumentTypeError("give USER:PASSWORD, both not empty")
    if any(ord(c) < 32 for c in text):
        raise argparse.ArgumentTypeError("control characters are not allowed")
    return text


def _token(text: str) -> str:
    if len(text) < 8 or not all(33 <= ord(c) < 127 for c in text):
        raise argparse.ArgumentTypeError("a token is at least 8 printable ASCII characters, no spaces")
    return text


def _secret_file(check):
    """The first line of a file, checked like the option it replaces (exit 2 if unreadable)."""

    def convert(path: str) -> str:
        try:
            with open(path, encoding="utf-8") as f:
                line = f.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise argparse.ArgumentTypeError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
        try:
            return check(line)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{path}: {exc}") from None

    return convert


def _parsed(parse):
    """An argparse type from a parser that raises ValueError with a message for people."""

    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _folder(text: str) -> str:
    if not text.strip() or any(ord(c) < 32 for c in text):
        raise argparse.ArgumentTypeError("give a folder")
    return text


def _log_level(text: str) -> str:
    if text.lower() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return text.lower()


def _base_path(text: str) -> str:
    """``/webcam`` (a trailing slash dropped; ``""`` or ``/``: none)."""
    if not text:
        return ""
    path = clean_prefix(text)
    if path is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a URL path like /webcam: a leading slash, then letters, digits, "
            "'-', '.', '_' or '~' between single slashes, no '.' or '..' segment"
        )
    return path


def _origins(text: str) -> tuple[str, ...]:
    """One origin, or several separated by commas (the environment's form)."""
    try:
        return tuple(normalize_origin(item) for item in text.split(",") if item.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _ExtendOrigins(argparse.Action):
    """Repeatable option whose first use on the command line replaces the
    environment's value instead of adding to it."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[override]
        current = getattr(namespace, self.dest)
        if current is self.default or not isinstance(current, tuple):
            current = ()
        setattr(namespace, self.dest, current + tuple(values))


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The command line; every option's default comes from the environment if set."""

    def env_default(name: str, default: str | None) -> str | None:
        return env.get(ENV_PREFIX + name.upper().replace("-", "_"), default)

    parser = _Parser(
        prog="server.py",
        description="Serve a live camera as Motion-JPEG and over WebSocket. "
        f"Each option can also be set in the environment as {ENV_PREFIX}NAME "
        "(for example CAMSTREAM_PORT=8000); CAMERA=NAME selects the camera as well.",
    )
    net = parser.add_argument_group("network")
    net.add_argument(
        "--host",
        default=env_default("host", "127.0.0.1"),
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)",
    )
    net.add_argument(
        "--port",
        type=_number(int, 0, 65535, "a port number 0-65535"),
        default=env_default("port", "8080"),
        help="TCP port (default 8080; 0 picks a free one)",
    )
    net.add_argument(
        "--allow-origin",
        dest="allow_origins",
        metavar="ORIGIN",
        type=_origins,
        action=_ExtendOrigins,
        default=env_default("allow-origin", ""),
        help="also accept WebSocket connections from pages of ORIGIN (scheme://host[:port]); "
        "repeatable; the environment takes a comma-separated list (default: same origin only)",
    )
    net.add_argument(
        "--certfile",
        metavar="PEM",
        default=env_default("certfile", None),
        help="serve HTTPS and WSS with this certificate chain (PEM)",
    )
    net.add_argument(
        "--keyfile",
        metavar="PEM",
        default=env_default("keyfile", None),
        help="the private key of --certfile (if not in the same file)",
    )
    net.add_argument(
        "--max-clients",
        type=_number(int, 1, 100000, "a number of clients, 1-100000"),
        default=env_default("max-clients", "500"),
        help="streams (MJPEG and WebSocket, every camera) at once; more get 503 (default 500)",
    )
    net.add_argument(
        "--stall-timeout",
        type=_number(float, 1, 86400, "seconds, 1-86400"),
        default=env_default("stall-timeout", "30"),
        help="disconnect a viewer that has taken no bytes for this long (default 30)",
    )
    net.add_argument(
        "--base-path",
        metavar="PATH",
        type=_base_path,
        default=env_default("base-path", ""),
        help="serve every URL under PATH (e.g. /webcam), for a reverse proxy that passes "
        "the path unchanged; / then redirects to PATH/ (default: none, at the root)",
    )
    auth = parser.add_argument_group("access (default: anyone who can reach the port)")
    basic = auth.add_mutually_exclusive_group()
    basic.add_argument(
        "--auth",
        metavar="USER:PASSWORD",
        type=_credentials,
        default=env_default("auth", None),
        help="HTTP Basic authentication for every URL",
    )
    basic.add_argument(
        "--auth-file",
        dest="auth",
        metavar="PATH",
        type=_secret_file(_credentials),
        help="the same, read from the first line of a file (not visible in the process list)",
    )
    token = auth.add_mutually_exclusive_group()
    token.add_argument(
        "--token",
        type=_token,
        default=env_default("token", None),
        help="also accept this token, as ?token=TOKEN on any URL or Authorization: Bearer TOKEN",
    )
    token.add_argument(
        "--token-file",
        dest="token",
        metavar="PATH",
        type=_secret_file(_token),
        help="the same, read from the first line of a file",
    )
    cam = parser.add_argument_group("camera")
    cam.add_argument(
        "--camera",
        dest="cameras",
        metavar="[NAME=]DRIVER[:SOURCE]",
        action="append",
        default=None,
        help=f"a camera: driver {', '.join(sorted(DRIVERS))} (default emulated), optionally named "
        "(its URLs are /cameras/NAME/...) and with its source; repeat for several cameras",
    )
    cam.add_argument(
        "--config",
        metavar="FILE",
        default=env_default("config", None),
        help="a TOML file of cameras, one [cameras.NAME] table each with driver, source, "
        "width, height, fps, quality (see the README)",
    )
    cam.add_argument(
        "--source",
        default=env_default("source", None),
        help="driver-specific source: files: a folder of .jpg files; opencv: a device index, "
        "a video file or a stream URL; mjpeg: http://[user:pass@]host/path; picamera2: a camera number",
    )
    cam.add_argument(
        "--fps",
        type=_number(float, 0.01, 120, "frames per second above 0, at most 120"),
        default=env_default("fps", "30"),
        help="frames per second (default 30)",
    )
    cam.add_argument(
        "--width",
        type=_number(int, 16, 8192, "a width of 16-8192 pixels"),
        default=env_default("width", "640"),
        help="frame width in pixels (default 640)",
    )
    cam.add_argument(
        "--height",
        type=_number(int, 16, 8192, "a height of 16-8192 pixels"),
        default=env_default("height", "480"),
        help="frame height in pixels (default 480)",
    )
    cam.add_argument(
        "--quality",
        type=_number(int, 1, 100, "a JPEG quality of 1-100"),
        default=env_default("quality", "80"),
        help="JPEG quality 1-100 (default 80)",
    )
    cam.add_argument(
        "--idle-timeout",
        type=_number(float, 0, 86400, "seconds, 0-86400"),
        default=env_default("idle-timeout", "10"),
        help="stop the camera this many seconds after the last viewer leaves (default 10)",
    )
    cam.add_argument(
        "--snapshot-timeout",
        type=_number(float, 0.1, 600, "seconds, 0.1-600"),
        default=env_default("snapshot-timeout", "5"),
        help="how long a snapshot waits for a cold camera's first frame (default 5)",
    )
    rec = parser.add_argument_group("recording (default: none)")
    rec.add_argument(
        "--record",
        metavar="DIR",
        type=_folder,
        default=env_default("record", None),
        help="record every camera (the JPEGs as they are, in Matroska segment files) "
        "into DIR/NAME/, keeping the cameras running; a config file can set it per camera",
    )
    rec.add_argument(
        "--record-segment",
        metavar="SECONDS",
        type=_number(float, 1, 86400, "seconds, 1-86400"),
        default=env_default("record-segment", "300"),
        help="length of a segment file; segments end on multiples of it (default 300)",
    )
    rec.add_argument(
        "--record-max-size",
        metavar="SIZE",
        type=_parsed(parse_size),
        default=env_default("record-max-size", None),
        help="keep at most this much per camera (500M, 20G, 1T), deleting the oldest segments",
    )
    rec.add_argument(
        "--record-max-age",
        metavar="AGE",
        type=_parsed(parse_age),
        default=env_default("record-max-age", None),
        help="delete segments older than this (90m, 36h, 7d, 2w)",
    )
    other = parser.add_argument_group("other")
    other.add_argument(
        "--log-level",
        type=_log_level,
        default=env_default("log-level", "info"),
        help="debug, info, warning or error (default info)",
    )
    other.add_argument("--version", action="version", version=f"camstream {__version__}")
    return parser


def _record_settings(args: argparse.Namespace) -> RecordSettings:
    """The command line's recording (its folder empty when ``--record`` is not given)."""
    return RecordSettings(
        directory=args.record or "",
        segment_s=args.record_segment,
        max_bytes=args.record_max_size,
        max_age_s=args.record_max_age,
    )


def _camera_specs(
    args: argparse.Namespace, env: Mapping[str, str], defaults: CameraConfig
) -> list[CameraSpec]:
    """The cameras of ``--config`` then of each ``--camera`` (else of $CAMERA, else emulated)."""
    drivers = set(DRIVERS)
    base = _record_settings(args)
    record = base if base.directory else None
    specs = load_config(args.config, defaults, drivers, base) if args.config else []
    values = args.cameras
    if values is None and not specs:
        values = [env.get(ENV_PREFIX + "CAMERA") or env.get("CAMERA") or "emulated"]
    specs += [parse_camera_arg(value, defaults, drivers, record) for value in values or ()]
    return check_unique(specs)


def parse_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``argv`` and ``env``; exits with status 2 and one line on a bad value."""
    env = os.environ if env is None else env
    parser = build_parser(env)
    args = parser.parse_args(argv)
    defaults = CameraConfig(
        source=args.source or None,
        width=args.width,
        height=args.height,
        fps=args.fps,
        quality=args.quality,
    )
    try:
        specs = _camera_specs(args, env, defaults)
    except CameraError as exc:
        parser.error(str(exc))
    return Settings(
        host=args.host,
        port=args.port,
        camera=specs[0].driver,
        source=specs[0].config.source,
        cameras=tuple(specs),
        fps=args.fps,
        width=args.width,
        height=args.height,
        quality=args.quality,
        idle_timeout_s=args.idle_timeout,
        snapshot_timeout_s=args.snapshot_timeout,
        log_level=args.log_level,
        allow_origins=tuple(dict.fromkeys(args.allow_origins)),
        auth=args.auth,
        token=args.token,
        certfile=args.certfile,
        keyfile=args.keyfile,
        max_clients=args.max_clients,
        record=_record_settings(args) if args.record else None,
        stall_timeout_s=args.stall_timeout,
        base_path=args.base_path,
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


def make_app(settings: Settings, feeds: FrameFeed | Mapping[str, FrameFeed]) -> tornado.web.Application:
    """The Tornado application over the feeds (name to feed, in order; a lone
    feed is a server of one camera)."""
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
        recorders={name: feed.recorder for name, feed in feeds.items() if feed.recorder is not None},
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
    specs = settings.camera_specs()
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
                recorder=Recorder(spec.name, spec.record, fps=spec.config.fps) if spec.record else None,
            )
    except CameraError:
        for feed in feeds.values():
            feed.close()
        raise
    return feeds


def make_feed(settings: Settings) -> FrameFeed:
    """The feed of the first camera alone (a server of one camera)."""
    first = settings.camera_specs()[0]
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
        for feed in feeds.values():
            feed.close()
        _fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}")
    tls = None
    if settings.certfile:
        try:
            tls = tls_context(settings.certfile, settings.keyfile)
        except (OSError, ssl.SSLError) as exc:
            for feed in feeds.values():
                feed.close()
            _fail(f"--certfile {settings.certfile}: {getattr(exc, 'strerror', None) or exc}")
    for name, feed in feeds.items():
        try:
            feed.start_recording()
        except (OSError, CameraError) as exc:
            for each in feeds.values():
                each.close()
            folder = feed.recorder.folder if feed.recorder else ""
            _fail(f"camera {name!r}: cannot record in {folder}: {getattr(exc, 'strerror', None) or exc}")
    app = make_app(settings, feeds)
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
        log.warning("second signal: exiting at once")
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
    for feed in feeds.values():
        feed.close()
    await asyncio.wait_for(server.close_all_connections(), timeout=2.0)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python server.py`` and of the ``camstream`` command."""
    settings = parse_settings(argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
