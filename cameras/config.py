"""Which cameras a server runs: ``--camera NAME=DRIVER[:SOURCE]`` and ``--config cameras.toml``.

A config file names each camera in a table of its own; any key left out comes
from the command line (or its default)::

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

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cameras import DRIVERS, check_driver
from cameras.base import CameraConfig, CameraError
from recording.recorder import RecordSettings, parse_age, parse_size

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


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


#: The ranges of every number a camera's table (or the command line, for every
#: camera) may set, by TOML key; the command line's options use these same ones.
LIMITS: dict[str, Limit] = {
    "width": Limit(int, 16, 8192, "a width in pixels"),
    "height": Limit(int, 16, 8192, "a height in pixels"),
    "fps": Limit(float, 0.01, 120, "frames per second"),
    "quality": Limit(int, 1, 100, "a JPEG quality"),
    "record_segment": Limit(float, 1, 86400, "seconds"),
    "max_variants": Limit(int, 0, 20, "a number of variants"),
}
_CONFIG_NUMBERS = ("width", "height", "fps", "quality", "max_variants")
#: Every key a ``[cameras.NAME]`` table may have.
KEYS = frozenset({"driver", "source", *LIMITS, "record", "record_max_size", "record_max_age"})


@dataclass(frozen=True)
class CameraSpec:
    """One camera of the server: its URL name, its driver and what the driver is asked for."""

    name: str
    driver: str
    config: CameraConfig
    #: Where and how it records, or None.
    record: RecordSettings | None = None
    #: Where its source was given, for messages: a driver's "--source X: ..."
    #: error is shown with this in place of "--source".
    source_from: str = "--source"

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


def parse_camera_arg(text: str, defaults: CameraConfig, record: RecordSettings | None = None) -> CameraSpec:
    """One ``--camera`` value: ``DRIVER``, ``NAME=DRIVER`` or ``NAME=DRIVER:SOURCE``.

    The unnamed form is named after its driver.  A source given in the value
    wins over ``--source``.  Raises CameraError with a message for people (an
    unknown driver: :func:`cameras.check_driver`'s).
    """
    name, sep, rest = text.partition("=")
    if not sep:
        name, rest = "", text
    driver, colon, source = rest.partition(":")
    driver = check_driver(driver.strip())
    name = check_name(name.strip() or driver)
    config = replace(defaults, name=name, source=source if colon else defaults.source)
    where = f"--camera {text.strip()}: source" if colon else "--source"
    return CameraSpec(name, driver, config, record, where)


def _number(camera: str, key: str, value: Any) -> float:
    limit = LIMITS[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CameraError(f"camera {camera!r}: {key} must be a number")
    if limit.kind is int and not float(value).is_integer():
        raise CameraError(f"camera {camera!r}: {key} must be a whole number")
    if not limit.allows(value):
        raise CameraError(f"camera {camera!r}: {key} {value} is out of range ({limit.low:g}-{limit.high:g})")
    return limit.kind(value)


def _record(camera: str, table: dict[str, Any], base: RecordSettings) -> RecordSettings | None:
    """A camera's recording: its table's ``record*`` keys over ``base`` (the
    command line's; ``directory`` empty when it does not record)."""
    value = table.get("record", bool(base.directory))
    if value is True:
        if not base.directory:
            raise CameraError(f'camera {camera!r}: record = true needs --record DIR (or record = "DIR")')
        directory = base.directory
    elif value is False:
        directory = ""
    elif isinstance(value, str) and value.strip():
        directory = value
    else:
        raise CameraError(f"camera {camera!r}: record must be a folder, true or false")
    segment_s = base.segment_s
    if "record_segment" in table:
        limit = LIMITS["record_segment"]
        segment_s = table["record_segment"]
        number = isinstance(segment_s, int | float) and not isinstance(segment_s, bool)
        if not number or not limit.allows(segment_s):
            raise CameraError(
                f"camera {camera!r}: record_segment must be {limit.low:g}-{limit.high:g} seconds"
            )
    try:
        max_bytes = parse_size(table["record_max_size"]) if "record_max_size" in table else base.max_bytes
        max_age_s = parse_age(table["record_max_age"]) if "record_max_age" in table else base.max_age_s
    except ValueError as exc:
        raise CameraError(f"camera {camera!r}: {exc}") from None
    if not directory:
        return None
    return RecordSettings(directory, float(segment_s), max_bytes, max_age_s)


def load_config(path: str, defaults: CameraConfig, record: RecordSettings | None = None) -> list[CameraSpec]:
    """The cameras of a TOML file, in file order; raises CameraError naming the problem.

    ``record`` is the command line's recording (its folder empty if none),
    which each table may override."""
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
        unknown = set(table) - KEYS
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
        source = table.get("source", defaults.source)
        if source is not None and not isinstance(source, str | int):
            raise CameraError(f"camera {name!r}: source must be a string")
        numbers = {key: _number(name, key, table[key]) for key in _CONFIG_NUMBERS if key in table}
        config = replace(defaults, name=name, source=None if source is None else str(source), **numbers)
        where = f"--config {path}: [cameras.{name}] source" if "source" in table else "--source"
        specs.append(CameraSpec(name, driver, config, _record(name, table, record), where))
    return specs


def check_unique(specs: list[CameraSpec]) -> list[CameraSpec]:
    """``specs`` if no two cameras share a name, else CameraError."""
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise CameraError(f"two cameras are named {spec.name!r}: name them NAME=DRIVER")
        seen.add(spec.name)
    return specs
