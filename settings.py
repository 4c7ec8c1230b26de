"""The server's settings: one table of options, the command line and the config file read
through it, and :class:`Settings`.

Every option is written once, in :data:`OPTIONS`: its flag, its environment
variable (``CAMSTREAM_<NAME>``), its default, how its text is read (its
parser, or for a number its :class:`Limit`: type and range), its help, its
group, and for the options that apply to every camera the key a config
file's ``[cameras.NAME]`` table sets it with.  The command line wins over the
environment, which wins over the default.  A config file (:func:`load_config`)
knows no keys and no ranges of its own: its keys are the options' ``toml``
keys (and ``driver``), and each value is checked by its option, so a number
has the same range on the command line and in a file.  tests/test_settings.py
checks the README's table of options against this one.

The cameras themselves: :class:`CameraSpec` (a name, a driver, the
driver's :class:`~cameras.base.CameraConfig`, the feed's cap on variants,
the recording), from ``--camera NAME=DRIVER[:SOURCE]`` (:func:`parse_camera_arg`)
and from ``--config`` (:func:`load_config`).

    settings = parse_settings(sys.argv[1:], os.environ)   # exits 2 with one line on a bad value
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

from cameras import DRIVERS, CameraConfig, check_driver
from cameras.relay import MAX_PART_BYTES
from frame import CameraError
from handlers.cors import normalize_origin
from handlers.pages import clean_prefix
from recording.recorder import RecordSettings

__version__ = "0.1.0"

ENV_PREFIX = "CAMSTREAM_"
LOG_LEVELS = ("debug", "info", "warning", "error")

#: The option groups, in order: name to the title ``--help`` shows.
GROUPS: dict[str, str] = {
    "network": "network",
    "access": "access (default: anyone who can reach the port)",
    "camera": "camera",
    "recording": "recording (default: none)",
    "other": "other",
}

#: What an option's value goes into (:attr:`Option.into`).
SERVER, CAMERA, SPEC, RECORD, CAMERAS = "server", "camera", "spec", "record", "cameras"


# -- reading values -------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One clear line and status 2, no usage dump (control characters of the
        offending value shown escaped, so the message stays one line)."""
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        self.exit(2, f"{self.prog}: error: {shown}\n")


@dataclass(frozen=True)
class Limit:
    """A number setting's type and inclusive range, and what it is, for messages."""

    kind: type[int] | type[float]
    low: float
    high: float
    #: What the number is, for people: "a width in pixels", "seconds".
    noun: str

    def allows(self, value: float) -> bool:
        """True if ``value`` lies in the range (never for NaN); the type is not checked."""
        return not math.isnan(value) and self.low <= value <= self.high

    def describe(self) -> str:
        """``"a width in pixels, 16-8192"``."""
        return f"{self.noun}, {self.low:g}-{self.high:g}"


def _number(limit: Limit) -> Callable[[str], float]:
    """An argparse type: a number of ``limit``'s kind within its range (never NaN)."""

    def convert(text: str) -> float:
        try:
            value = limit.kind(text)
        except ValueError:
            number = "a whole number" if limit.kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {number} ({limit.describe()})") from None
        if not limit.allows(value):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range ({limit.describe()})")
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


def _secret_file(check: Callable[[str], str]) -> Callable[[str], str]:
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


_SIZE_UNITS: dict[str, float] = {"": 1, "b": 1}
for _i, _prefix in enumerate("kmgt", 1):
    _SIZE_UNITS.update(
        {_prefix: 1000**_i, _prefix + "b": 1000**_i, _prefix + "i": 1024**_i, _prefix + "ib": 1024**_i}
    )
_AGE_UNITS: dict[str, float] = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _quantity(text: str | int | float, units: dict[str, float], unit_pattern: str, what: str) -> float:
    """A number with an optional unit (``"1.5G"``, ``"36h"``), or a bare number; ValueError if not."""
    if isinstance(text, bool):
        raise ValueError(f"give {what}")
    if isinstance(text, int | float):
        return float(text)
    match = re.fullmatch(rf"\s*(\d+(?:\.\d+)?)\s*({unit_pattern})?\s*", text.lower())
    if not match:
        raise ValueError(f"{text!r} is not {what}")
    return float(match.group(1)) * units[match.group(2) or ""]


def parse_size(text: str | int | float) -> int:
    """Bytes from ``"500M"``, ``"10G"``, ``"1.5T"``, ``"2GiB"`` or a number (``--record-max-size``);
    ValueError if not."""
    size = int(_quantity(text, _SIZE_UNITS, r"[kmgt]i?b?|b", "a size (such as 500M or 20G)"))
    if size < 1_000_000:
        raise ValueError(f"{text!r} is too small: keep at least 1M")
    return size


#: The smallest part cap ``--relay-max-part`` takes, bytes (the largest: MAX_PART_BYTES).
MIN_PART_BYTES = 64_000


def parse_part_size(text: str | int | float) -> int:
    """Bytes from ``"8M"``, ``"500K"``, ``"16MiB"`` or a number (``--relay-max-part``),
    64K to 16MiB; ValueError if not."""
    size = int(_quantity(text, _SIZE_UNITS, r"[kmgt]i?b?|b", "a size (such as 8M or 500K)"))
    if not MIN_PART_BYTES <= size <= MAX_PART_BYTES:
        raise ValueError(f"{text!r} is out of range (64K to 16MiB)")
    return size


def parse_age(text: str | int | float) -> float:
    """Seconds from ``"36h"``, ``"7d"``, ``"2w"``, ``"90m"`` or a number of seconds
    (``--record-max-age``); ValueError if not."""
    age = _quantity(text, _AGE_UNITS, r"[smhdw]", "an age (such as 36h or 7d)")
    if not 60 <= age <= 100 * 365 * 86400:
        raise ValueError(f"{text!r} is out of range (1 minute to 100 years)")
    return age


def _parsed(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """An argparse type from a parser that raises ValueError with a message for people
    (the value given as it is: a config file's number too)."""

    def convert(text: Any) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _folder(text: str) -> str:
    if not text.strip() or any(ord(c) < 32 for c in text):
        raise argparse.ArgumentTypeError("give a folder")
    return text


#: One CSP source expression of ``frame-ancestors``: a scheme (``https:``), or a host
#: (``*``, ``example.com``, ``*.example.com``) with an optional scheme, port and path.
_CSP_SOURCE = re.compile(
    r"(?:[A-Za-z][A-Za-z0-9+.-]*:"
    r"|(?:[A-Za-z][A-Za-z0-9+.-]*://)?(?:\*|(?:\*\.)?[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?:[0-9]{1,5}|\*))?(?:/[A-Za-z0-9._~!$&'()*+=:@%/-]*)?)"
)


def _frame_ancestors(text: str) -> str:
    """A ``frame-ancestors`` source list: ``*``, ``'none'`` (alone), or ``'self'``,
    schemes (``https:``) and hosts (``https://dash.example``, ``*.example.com:8443``)
    separated by spaces; the same list, its spaces made single."""
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise argparse.ArgumentTypeError("control characters are not allowed")
    sources = text.split()
    if not sources:
        raise argparse.ArgumentTypeError(
            "give a CSP source list such as \"'self' https://dash.example\" or 'none'"
        )
    for source in sources:
        keyword = source.lower()
        if keyword == "'none'" and len(sources) > 1:
            raise argparse.ArgumentTypeError("'none' cannot be combined with other sources")
        if keyword not in ("'self'", "'none'") and not _CSP_SOURCE.fullmatch(source):
            raise argparse.ArgumentTypeError(
                f"{source!r} is not a CSP source: give 'self', 'none', a scheme such as https: "
                "or a host such as https://dash.example, *.example.com or *, separated by spaces"
            )
    return " ".join(sources)


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


def _bus_servers(text: str) -> tuple[str, ...]:
    """One NATS server URL, or several separated by commas (the environment's form)."""
    from bus import parse_bus_url

    try:
        items = [item.strip() for item in text.split(",") if item.strip()]
        return tuple(parse_bus_url(item, camera=False).server for item in items)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bus_auth(text: str) -> str:
    if not text or len(text) > 4096 or not all(32 < ord(c) < 127 for c in text):
        raise argparse.ArgumentTypeError("give USER:PASSWORD or a token: printable ASCII, no spaces")
    user, colon, password = text.partition(":")
    if colon and not (user and password):
        raise argparse.ArgumentTypeError("give USER:PASSWORD, both not empty, or a token")
    return text


TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _switch(text: str) -> bool:
    """A switch's value in the environment: 1/true/yes/on or 0/false/no/off."""
    word = text.strip().lower()
    if word in TRUE:
        return True
    if word in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: give 1 or 0 (true/false, yes/no, on/off)")


def _bus_prefix(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", text):
        raise argparse.ArgumentTypeError(f"{text!r}: letters, digits, '-' and '_', in dot-separated tokens")
    return text


class _ExtendOrigins(argparse.Action):
    """Repeatable option whose first use on the command line replaces the
    environment's value instead of adding to it."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[override]
        current = getattr(namespace, self.dest)
        if current is self.default or not isinstance(current, tuple):
            current = ()
        setattr(namespace, self.dest, current + tuple(values))


# -- the cameras ----------------------------------------------------------------
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


@dataclass(frozen=True)
class CameraSpec:
    """One camera of the server: its URL name, its driver, what the driver is asked
    for, and what the server does with its frames (variants, recording)."""

    name: str
    driver: str
    config: CameraConfig
    #: Where and how it records, or None.
    record: RecordSettings | None = None
    #: Where its source was given, for messages: a driver's "--source X: ..."
    #: error is shown with this in place of "--source".
    source_from: str = "--source"
    #: Variants (other sizes or qualities, :mod:`outputs.variants`) running at
    #: once for its viewers (``--max-variants``); 0: none.
    max_variants: int = 4

    def explain(self, error: CameraError) -> CameraError:
        """``error`` (from building this camera) naming where its source was given."""
        text = str(error)
        if self.source_from != "--source" and text.startswith("--source"):
            text = self.source_from + text[len("--source") :]
        return CameraError(text)


def check_name(name: str) -> str:
    """``name`` if it is a valid camera name (it appears in URLs), else CameraError."""
    if not NAME_PATTERN.match(name):
        raise CameraError(
            f"camera name {name!r}: use 1-40 lowercase letters, digits, '-' or '_',"
            " starting with a letter or digit"
        )
    return name


def parse_camera_arg(
    text: str,
    defaults: CameraConfig,
    record: RecordSettings | None = None,
    *,
    max_variants: int = CameraSpec.max_variants,
) -> CameraSpec:
    """One ``--camera`` value: ``DRIVER``, ``NAME=DRIVER`` or ``NAME=DRIVER:SOURCE``.

    The unnamed form is named after its driver.  A source given in the value
    wins over ``--source``; the rest is ``defaults`` (the command line's), and
    ``record`` and ``max_variants``.  Raises CameraError with a message for
    people (an unknown driver: :func:`cameras.check_driver`'s).
    """
    name, sep, rest = text.partition("=")
    if not sep:
        name, rest = "", text
    driver, colon, source = rest.partition(":")
    driver = check_driver(driver.strip())
    name = check_name(name.strip() or driver)
    config = replace(defaults, name=name, source=source if colon else defaults.source)
    where = f"--camera {text.strip()}: source" if colon else "--source"
    return CameraSpec(name, driver, config, record, where, max_variants)


# -- the table ------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """One option of the server: what the command line, the environment, ``--help``,
    the README and a config file need to know of it."""

    flag: str
    #: A key of :data:`GROUPS`.
    group: str
    #: For ``--help``; " (default X)" is added when there is a default.
    help: str
    #: The value (already read) when neither the command line nor the environment gives one.
    default: Any = None
    #: Text to value, raising ``argparse.ArgumentTypeError``; None: the text
    #: itself, or a number within ``limit``.  A per-camera option's parser
    #: also reads its config file value (a TOML string, or a number).
    parse: Callable[[str], Any] | None = None
    #: The type and range of a number, on the command line, in the environment
    #: and (a per-camera number) in a config file's tables alike.
    limit: Limit | None = None
    metavar: str | None = None
    #: What the value goes into: :class:`Settings` (SERVER), every camera's
    #: :class:`CameraConfig` (CAMERA: the driver's), every camera's
    #: :class:`CameraSpec` (SPEC: the server's business), every camera's
    #: :class:`RecordSettings` (RECORD), or the list of cameras itself (CAMERAS).
    into: str = SERVER
    #: The attribute of ``into`` it sets; the flag's name with ``_`` if empty.
    field: str = ""
    #: Its key in a ``[cameras.NAME]`` table of a config file, if a camera can set its own.
    toml: str | None = None
    #: The environment variables read (the first set wins); None: ``CAMSTREAM_<NAME>``.
    env: tuple[str, ...] | None = None
    #: Options of the same name here are mutually exclusive (two forms of one setting).
    exclusive: str | None = None
    #: The argparse destination, when two flags set one setting; the field's name if None.
    dest: str | None = None
    action: str | type[argparse.Action] | None = None

    @property
    def name(self) -> str:
        """The flag without its dashes: ``"max-clients"``."""
        return self.flag.removeprefix("--")

    @property
    def attribute(self) -> str:
        """The attribute of :attr:`into` it sets."""
        return self.field or self.name.replace("-", "_")

    @property
    def destination(self) -> str:
        """The argparse destination (shared by the two forms of one setting)."""
        return self.dest or self.attribute

    @property
    def env_names(self) -> tuple[str, ...]:
        """The environment variables it is read from, first first; () for none."""
        if self.env is not None:
            return self.env
        return (ENV_PREFIX + self.name.upper().replace("-", "_"),)

    @property
    def shown_default(self) -> str:
        """The default as the help and the README show it: ``"30"``, ``"none"``."""
        if self.default is False:
            return "off"
        if self.default is None or self.default in ("", ()):
            return "none"
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)

    def reader(self) -> Callable[[str], Any] | None:
        """The argparse type: text to value, raising ``argparse.ArgumentTypeError``."""
        return _number(self.limit) if self.limit else self.parse

    def help_text(self) -> str:
        """The help with its range and default, for ``--help``."""
        limit = self.limit
        text = f"{self.help}, {limit.low:g}-{limit.high:g}" if limit else self.help
        shown = self.shown_default
        return text if shown == "none" else f"{text} (default {shown})"


_CAMERA_DEFAULTS = CameraConfig()
_RECORD_DEFAULTS = RecordSettings("")
_CAMERA_ENV = (ENV_PREFIX + "CAMERA", "CAMERA")

#: Every option, grouped and in the order of ``--help`` (and of the README).
OPTIONS: tuple[Option, ...] = (
    Option("--host", "network", "address to listen on; 0.0.0.0 for all", default="127.0.0.1"),
    Option(
        "--port",
        "network",
        "TCP port; 0 picks a free one",
        default=8080,
        limit=Limit(int, 0, 65535, "a port number"),
    ),
    Option(
        "--allow-origin",
        "network",
        "let web apps of ORIGIN (scheme://host[:port]) open the WebSocket and fetch() the streams "
        "and snapshots (CORS, credentials included); repeatable; the environment takes a "
        "comma-separated list (default: same origin only)",
        default=(),
        parse=_origins,
        metavar="ORIGIN",
        field="allow_origins",
        action=_ExtendOrigins,
    ),
    Option(
        "--frame-ancestors",
        "network",
        "who may show /kiosk in a frame: a CSP source list such as \"'self' https://dash.example\", "
        "or 'none' (the other pages: nobody)",
        default="*",
        parse=_frame_ancestors,
        metavar="SOURCES",
    ),
    Option(
        "--publish",
        "network",
        "publish every camera's frames to the NATS server at URL (nats://HOST:PORT, or tls://), "
        "for edge servers (--camera NAME=nats:URL/CAMERA); repeatable (servers of one cluster); "
        "the environment takes a comma-separated list",
        default=(),
        parse=_bus_servers,
        metavar="URL",
        field="publish",
        action=_ExtendOrigins,
    ),
    Option(
        "--bus-auth",
        "network",
        "the NATS credentials of --publish and of nats: cameras whose URL gives none: "
        "USER:PASSWORD, or a token",
        parse=_bus_auth,
        metavar="USER:PASSWORD|TOKEN",
        exclusive="bus_auth",
    ),
    Option(
        "--bus-auth-file",
        "network",
        "the same, read from the first line of a file (not visible in the process list)",
        parse=_secret_file(_bus_auth),
        metavar="PATH",
        field="bus_auth",
        env=(),
        exclusive="bus_auth",
    ),
    Option(
        "--bus-prefix",
        "network",
        "the first token of every NATS subject (PREFIX.CAMERA.frames, PREFIX.CAMERA.interest)",
        default="camstream",
        parse=_bus_prefix,
        metavar="PREFIX",
    ),
    Option(
        "--reuse-port",
        "network",
        "share the port with other server processes (SO_REUSEPORT): start N edges with the same "
        "--port and the kernel spreads the connections over them, one core each; the environment "
        "takes 1 or 0",
        default=False,
        parse=_switch,
        action="store_true",
    ),
    Option("--certfile", "network", "serve HTTPS and WSS with this certificate chain (PEM)", metavar="PEM"),
    Option("--keyfile", "network", "the private key of --certfile (if not in the same file)", metavar="PEM"),
    Option(
        "--max-clients",
        "network",
        "streams (MJPEG and WebSocket, every camera) at once; more get 503",
        default=500,
        limit=Limit(int, 1, 100000, "a number of clients"),
    ),
    Option(
        "--stall-timeout",
        "network",
        "disconnect a viewer that has not taken the whole of one frame within SECONDS",
        default=30.0,
        metavar="SECONDS",
        limit=Limit(float, 1, 86400, "seconds"),
        field="stall_timeout_s",
    ),
    Option(
        "--base-path",
        "network",
        "serve every URL under PATH (e.g. /webcam), for a reverse proxy that passes "
        "the path unchanged; / then redirects to PATH/ (default: none, at the root)",
        default="",
        parse=_base_path,
        metavar="PATH",
    ),
    Option(
        "--auth",
        "access",
        "HTTP Basic authentication for every URL",
        parse=_credentials,
        metavar="USER:PASSWORD",
        exclusive="auth",
    ),
    Option(
        "--auth-file",
        "access",
        "the same, read from the first line of a file (not visible in the process list)",
        parse=_secret_file(_credentials),
        metavar="PATH",
        field="auth",
        env=(),
        exclusive="auth",
    ),
    Option(
        "--token",
        "access",
        "also accept this token, as ?token=TOKEN on any URL or Authorization: Bearer TOKEN; "
        "at least 8 printable ASCII characters, no spaces",
        parse=_token,
        exclusive="token",
    ),
    Option(
        "--token-file",
        "access",
        "the same, read from the first line of a file",
        parse=_secret_file(_token),
        metavar="PATH",
        field="token",
        env=(),
        exclusive="token",
    ),
    Option(
        "--camera",
        "camera",
        f"a camera: driver {', '.join(sorted(DRIVERS))}, optionally named (its URLs are "
        "/cameras/NAME/...) and with its source; repeat for several cameras",
        default="emulated",
        metavar="[NAME=]DRIVER[:SOURCE]",
        into=CAMERAS,
        field="cameras",
        env=_CAMERA_ENV,
        action="append",
    ),
    Option(
        "--config",
        "camera",
        "a TOML file of cameras, one [cameras.NAME] table each with driver, source, "
        "width, height, fps, quality (see the README)",
        metavar="FILE",
        into=CAMERAS,
    ),
    Option(
        "--source",
        "camera",
        "driver-specific source: files: a folder of .jpg files; opencv: a device index, "
        "a video file or a stream URL; mjpeg: http://[user:pass@]host/path; picamera2: a camera number",
        default=_CAMERA_DEFAULTS.source,
        into=CAMERA,
        toml="source",
    ),
    Option(
        "--fps",
        "camera",
        "frames per second",
        default=_CAMERA_DEFAULTS.fps,
        limit=Limit(float, 0.01, 120, "frames per second"),
        into=CAMERA,
        toml="fps",
    ),
    Option(
        "--width",
        "camera",
        "frame width in pixels",
        default=_CAMERA_DEFAULTS.width,
        limit=Limit(int, 16, 8192, "a width in pixels"),
        into=CAMERA,
        toml="width",
    ),
    Option(
        "--height",
        "camera",
        "frame height in pixels",
        default=_CAMERA_DEFAULTS.height,
        limit=Limit(int, 16, 8192, "a height in pixels"),
        into=CAMERA,
        toml="height",
    ),
    Option(
        "--quality",
        "camera",
        "JPEG quality",
        default=_CAMERA_DEFAULTS.quality,
        limit=Limit(int, 1, 100, "a JPEG quality"),
        into=CAMERA,
        toml="quality",
    ),
    Option(
        "--max-variants",
        "camera",
        "other sizes or qualities of a camera (asked for with ?width= and ?quality=, or "
        "chosen by adaptation) encoded at once; more viewers share the nearest; 0: every "
        "viewer gets the camera's own frames",
        default=CameraSpec.max_variants,
        limit=Limit(int, 0, 20, "a number of variants"),
        into=SPEC,
        toml="max_variants",
    ),
    Option(
        "--idle-timeout",
        "camera",
        "stop the camera SECONDS after the last viewer leaves",
        default=10.0,
        metavar="SECONDS",
        limit=Limit(float, 0, 86400, "seconds"),
        field="idle_timeout_s",
    ),
    Option(
        "--snapshot-timeout",
        "camera",
        "how many SECONDS a snapshot waits for a cold camera's first frame",
        default=5.0,
        metavar="SECONDS",
        limit=Limit(float, 0.1, 600, "seconds"),
        field="snapshot_timeout_s",
    ),
    Option(
        "--relay-max-part",
        "camera",
        "the largest part (one JPEG) an mjpeg camera takes from its upstream, 64K-16MiB (8M when not "
        "given): a larger part, or as many bytes without a boundary, is the camera's error and is "
        "never held in memory",
        parse=_parsed(parse_part_size),
        metavar="SIZE",
        into=CAMERA,
        field="max_part_bytes",
        toml="relay_max_part",
    ),
    Option(
        "--record",
        "recording",
        "record every camera (the JPEGs as they are, in Matroska segment files) "
        "into DIR/NAME/, keeping the cameras running; a config file can set it per camera",
        parse=_folder,
        metavar="DIR",
        into=RECORD,
        field="directory",
        toml="record",
    ),
    Option(
        "--record-segment",
        "recording",
        "seconds per segment file; segments end on multiples of it",
        default=_RECORD_DEFAULTS.segment_s,
        metavar="SECONDS",
        limit=Limit(float, 1, 86400, "seconds"),
        into=RECORD,
        field="segment_s",
        toml="record_segment",
    ),
    Option(
        "--record-max-size",
        "recording",
        "keep at most this much per camera (500M, 20G, 1T), deleting the oldest segments",
        default=_RECORD_DEFAULTS.max_bytes,
        parse=_parsed(parse_size),
        metavar="SIZE",
        into=RECORD,
        field="max_bytes",
        toml="record_max_size",
    ),
    Option(
        "--record-max-age",
        "recording",
        "delete segments older than this (90m, 36h, 7d, 2w)",
        default=_RECORD_DEFAULTS.max_age_s,
        parse=_parsed(parse_age),
        metavar="AGE",
        into=RECORD,
        field="max_age_s",
        toml="record_max_age",
    ),
    Option(
        "--log-level",
        "other",
        f"{', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]}",
        default="info",
        parse=_log_level,
    ),
)

#: The options by flag (``"--port"``).
BY_FLAG: dict[str, Option] = {option.flag: option for option in OPTIONS}


# -- a config file --------------------------------------------------------------
#: The options a camera's ``[cameras.NAME]`` table can set, by their ``toml`` key.
TABLE_OPTIONS: dict[str, Option] = {option.toml: option for option in OPTIONS if option.toml}
#: Every key a ``[cameras.NAME]`` table may have: the options' and ``driver``.
TABLE_KEYS = frozenset({"driver", *TABLE_OPTIONS})


def _table_number(camera: str, key: str, value: Any, limit: Limit) -> float:
    """A TOML number within ``limit`` (of its kind; never a boolean), else CameraError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CameraError(f"camera {camera!r}: {key} must be a number")
    if limit.kind is int and not float(value).is_integer():
        raise CameraError(f"camera {camera!r}: {key} must be a whole number")
    if not limit.allows(value):
        raise CameraError(f"camera {camera!r}: {key} {value} is out of range ({limit.low:g}-{limit.high:g})")
    return limit.kind(value)


def _table_value(camera: str, option: Option, value: Any, record: RecordSettings) -> Any:
    """A TOML value of ``option`` checked as the option checks it (its Limit, or
    its parser), for the attribute of :attr:`Option.into` it sets; ``record`` is
    the command line's recording.  Raises CameraError naming the camera."""
    key = option.toml or option.attribute
    if option.limit:
        return _table_number(camera, key, value, option.limit)
    if key == "record":  # a folder, or true (--record's folder) or false
        if value is True:
            if not record.directory:
                raise CameraError(f'camera {camera!r}: record = true needs --record DIR (or record = "DIR")')
            return record.directory
        if value is False:
            return ""
        if isinstance(value, str) and option.parse:
            try:
                return option.parse(value)
            except argparse.ArgumentTypeError:
                pass
        raise CameraError(f"camera {camera!r}: record must be a folder, true or false")
    if key == "source":  # a device number too
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise CameraError(f"camera {camera!r}: source must be a string")
        return str(value)
    if isinstance(value, str) or (option.parse and isinstance(value, int | float)):
        try:
            return option.parse(value) if option.parse else value
        except argparse.ArgumentTypeError as exc:
            raise CameraError(f"camera {camera!r}: {exc}") from None
    raise CameraError(f"camera {camera!r}: {key} must be a string")


def load_config(
    path: str,
    defaults: CameraConfig,
    record: RecordSettings | None = None,
    *,
    max_variants: int = CameraSpec.max_variants,
) -> list[CameraSpec]:
    """The cameras of a TOML file, in file order; raises CameraError naming the problem.

    A config file names each camera in a table of its own; any key left out
    comes from the command line (or its default): ``defaults``, ``record``
    (the command line's recording, its folder empty if none) and
    ``max_variants``.  Its keys are :data:`TABLE_KEYS`, each checked by its
    option::

        [cameras.garage]
        driver = "opencv"
        source = "0"
        width = 1280
        height = 720
        fps = 15

        [cameras.porch]
        driver = "mjpeg"
        source = "http://user:secret@192.0.2.10/video.mjpg"
        record = "/var/lib/camstream/recordings"   # or true (--record's folder), or false
        record_segment = 300                       # seconds
        record_max_size = "20G"
        record_max_age = "7d"
    """
    record = record or RecordSettings("")
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CameraError(f"--config {path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CameraError(f"--config {path}: not valid TOML ({exc})") from exc
    cameras = data.get("cameras")
    if not isinstance(cameras, dict) or not cameras:
        raise CameraError(f"--config {path}: no [cameras.NAME] tables")
    specs = []
    for name, table in cameras.items():
        check_name(name)
        if not isinstance(table, dict):
            raise CameraError(f"--config {path}: cameras.{name} must be a table")
        unknown = set(table) - TABLE_KEYS
        if unknown:
            raise CameraError(f"camera {name!r}: unknown setting {sorted(unknown)[0]!r}")
        if "driver" not in table:
            raise CameraError(
                f"--config {path}: the table [cameras.{name}] needs a driver "
                f'(driver = "{sorted(DRIVERS)[0]}", or one of {", ".join(sorted(DRIVERS)[1:])})'
            )
        driver = table["driver"]
        try:
            check_driver(driver)
        except CameraError as exc:
            raise CameraError(f"camera {name!r}: {exc}") from None
        values: dict[str, dict[str, Any]] = {CAMERA: {}, SPEC: {"max_variants": max_variants}, RECORD: {}}
        for key, value in table.items():
            if key != "driver":
                option = TABLE_OPTIONS[key]
                values[option.into][option.attribute] = _table_value(name, option, value, record)
        config = replace(defaults, name=name, **values[CAMERA])
        recording = replace(record, **values[RECORD])
        recording = recording if recording.directory else None
        where = f"--config {path}: [cameras.{name}] source" if "source" in table else "--source"
        specs.append(CameraSpec(name, driver, config, recording, where, **values[SPEC]))
    return specs


def check_unique(specs: list[CameraSpec]) -> list[CameraSpec]:
    """``specs`` if no two cameras share a name, else CameraError."""
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise CameraError(f"two cameras are named {spec.name!r}: name them NAME=DRIVER")
        seen.add(spec.name)
    return specs


def _default(attribute: str) -> Any:
    """The table's default of a :class:`Settings` attribute."""
    return next(o.default for o in OPTIONS if o.into == SERVER and o.attribute == attribute)


def _default_cameras() -> tuple[CameraSpec, ...]:
    driver = BY_FLAG["--camera"].default
    return (CameraSpec(driver, driver, CameraConfig(name=driver)),)


# -- the settings ---------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything the server is told at start; built once in ``main()`` by
    :func:`parse_settings` (tests: :meth:`single`).  The defaults are the table's."""

    host: str = _default("host")
    port: int = _default("port")
    #: Origins (``scheme://host[:port]``) allowed to open ``/ws`` and to ``fetch()``
    #: streams and snapshots (CORS) besides the page's own.
    allow_origins: tuple[str, ...] = _default("allow_origins")
    #: The CSP source list of who may frame ``/kiosk`` (``*``, ``'none'``, ``'self' https://a.example``).
    frame_ancestors: str = _default("frame_ancestors")
    #: NATS servers every camera's frames are published to (``--publish``), and the subjects' prefix.
    publish: tuple[str, ...] = _default("publish")
    bus_prefix: str = _default("bus_prefix")
    #: NATS credentials (``USER:PASSWORD`` or a token) for bus URLs that give none.
    bus_auth: str | None = _default("bus_auth")
    #: Bind with SO_REUSEPORT, so several processes share the port.
    reuse_port: bool = _default("reuse_port")
    #: TLS certificate chain and private key (PEM); HTTPS and WSS when set.
    certfile: str | None = _default("certfile")
    keyfile: str | None = _default("keyfile")
    #: Streams (MJPEG and WebSocket, all cameras) at once; more get 503.
    max_clients: int = _default("max_clients")
    #: A viewer that takes no bytes for this long is disconnected.
    stall_timeout_s: float = _default("stall_timeout_s")
    #: Every URL under this path (``/webcam``, no trailing slash), for a reverse
    #: proxy that passes the path unchanged; ``""``: at the root.
    base_path: str = _default("base_path")
    #: ``USER:PASSWORD`` for HTTP Basic authentication, or None.
    auth: str | None = _default("auth")
    #: An access token (``?token=`` or ``Authorization: Bearer``), or None.
    token: str | None = _default("token")
    #: A camera stops this many seconds after its last viewer leaves (unless it records).
    idle_timeout_s: float = _default("idle_timeout_s")
    #: How long a snapshot waits for a cold camera's first frame, seconds.
    snapshot_timeout_s: float = _default("snapshot_timeout_s")
    #: One of :data:`LOG_LEVELS`.
    log_level: str = _default("log_level")
    #: Every camera of the server, in order, each with its own size, rate,
    #: quality and recording; the first also answers at the short URLs.  Never empty.
    cameras: tuple[CameraSpec, ...] = dataclasses.field(default_factory=_default_cameras)

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ValueError("Settings need at least one camera")

    @classmethod
    def single(
        cls,
        driver: str = "emulated",
        source: str | None = None,
        *,
        name: str | None = None,
        record: RecordSettings | None = None,
        **values: Any,
    ) -> Settings:
        """The settings of one camera of ``driver`` over ``source``, named ``name``
        (else after its driver): ``values`` are the camera's ``width``, ``height``,
        ``fps``, ``quality`` and ``max_variants`` and any other attribute of
        Settings, the rest defaults.  Raises TypeError for an unknown keyword;
        the driver is checked only when the camera is built."""
        camera_keys = {f.name for f in dataclasses.fields(CameraConfig)} - {"name", "source"}
        spec_keys = {o.attribute for o in OPTIONS if o.into == SPEC}
        config = {key: values.pop(key) for key in list(values) if key in camera_keys}
        spec_values = {key: values.pop(key) for key in list(values) if key in spec_keys}
        name = name or driver
        camera = CameraConfig(name=name, source=source, **config)
        spec = CameraSpec(name, driver, camera, record, **spec_values)
        return cls(cameras=(spec,), **values)


# -- the command line -----------------------------------------------------------
def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The command line of :data:`OPTIONS`; an option's default is its environment
    variable's value if set (read like the command line's), else the table's."""
    parser = _Parser(
        prog="server.py",
        allow_abbrev=False,  # --v is not --version: only whole option names
        description="Serve a live camera as Motion-JPEG and over WebSocket. "
        f"Each option can also be set in the environment as {ENV_PREFIX}NAME "
        "(for example CAMSTREAM_PORT=8000); CAMERA=NAME selects the camera as well.",
    )
    groups = {name: parser.add_argument_group(title) for name, title in GROUPS.items()}
    exclusive: dict[str, Any] = {}
    for option in OPTIONS:
        group = groups[option.group]
        if option.exclusive:
            if option.exclusive not in exclusive:
                exclusive[option.exclusive] = group.add_mutually_exclusive_group()
            group = exclusive[option.exclusive]
        kwargs: dict[str, Any] = {
            "dest": option.destination,
            "help": option.help_text(),
            "metavar": option.metavar or option.name.upper().replace("-", "_"),
        }
        if option.action == "store_true":
            # A switch: no value on the command line; the environment's read by parse_settings.
            names = option.env_names
            kwargs.pop("metavar")
            kwargs.update(action="store_true", default=env.get(names[0], option.default) if names else False)
        elif option.action == "append":
            # Read in _camera_specs: the environment's camera applies only
            # when neither the command line nor a config file gives any.
            kwargs.update(action="append", default=None)
        else:
            names = option.env_names
            kwargs["default"] = env.get(names[0], option.default) if names else option.default
            if option.reader():
                kwargs["type"] = option.reader()
            if option.action:
                kwargs["action"] = option.action
        group.add_argument(option.flag, **kwargs)
    groups["other"].add_argument("--version", action="version", version=f"camstream {__version__}")
    return parser


def _values(args: argparse.Namespace, into: str) -> dict[str, Any]:
    """The parsed values of the options that go ``into`` one place, by attribute."""
    return {o.attribute: getattr(args, o.destination) for o in OPTIONS if o.into == into}


def _record_settings(args: argparse.Namespace) -> RecordSettings:
    """The command line's recording (its folder empty when ``--record`` is not given)."""
    values = _values(args, RECORD)
    return RecordSettings(**{**values, "directory": values["directory"] or ""})


def _camera_specs(
    args: argparse.Namespace, env: Mapping[str, str], defaults: CameraConfig
) -> list[CameraSpec]:
    """The cameras of ``--config`` then of each ``--camera`` (else of $CAMSTREAM_CAMERA
    or $CAMERA, else emulated); raises CameraError."""
    base = _record_settings(args)
    record = base if base.directory else None
    spec = _values(args, SPEC)
    specs = load_config(args.config, defaults, base, **spec) if args.config else []
    values = args.cameras
    if values is None and not specs:
        option = BY_FLAG["--camera"]
        values = [next((env[name] for name in option.env_names if env.get(name)), option.default)]
    specs += [parse_camera_arg(value, defaults, record, **spec) for value in values or ()]
    return check_unique(specs)


def parse_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``argv`` (None: ``sys.argv[1:]``) and ``env`` (None: ``os.environ``).

    Exits with status 2 and one line on stderr on a bad value (``--help`` and
    ``--version``: status 0).  The cameras are not built, so a driver's own
    checks of its source come later (``make_feeds``)."""
    env = os.environ if env is None else env
    parser = build_parser(env)
    args = parser.parse_args(argv)
    camera = _values(args, CAMERA)
    defaults = CameraConfig(**{**camera, "source": camera["source"] or None})
    try:
        specs = _camera_specs(args, env, defaults)
    except CameraError as exc:
        parser.error(str(exc))
    for option in OPTIONS:
        value = getattr(args, option.destination)
        if option.action == "store_true" and isinstance(value, str) and option.parse:
            try:
                setattr(args, option.destination, option.parse(value))
            except argparse.ArgumentTypeError as exc:
                parser.error(f"{option.env_names[0]}: {exc}")
    server = _values(args, SERVER)
    server["allow_origins"] = tuple(dict.fromkeys(server["allow_origins"]))
    server["publish"] = tuple(dict.fromkeys(server["publish"]))
    return Settings(cameras=tuple(specs), **server)
