"""Camera drivers, looked up by name.

The registry maps a driver name to ``"module:Class"``; the module is imported
only when that driver is asked for, so a driver's heavy or platform-only
dependency costs nothing to the others.
"""

from __future__ import annotations

import importlib
from typing import Any

from cameras.base import Camera, CameraConfig
from frame import CameraError

__all__ = ["DRIVERS", "Camera", "CameraConfig", "check_driver", "create_camera"]

DRIVERS: dict[str, str] = {
    "emulated": "cameras.emulated:EmulatedCamera",
    "files": "cameras.files:FilesCamera",
    "opencv": "cameras.opencv:OpenCVCamera",
    "picamera2": "cameras.picam:PiCamera",
    "mjpeg": "cameras.relay:RelayCamera",
    "nats": "cameras.nats:NatsCamera",
}


def check_driver(driver: str) -> str:
    """``driver`` if it names a driver of :data:`DRIVERS` (its module is not
    imported), else CameraError saying which names are known.  The one check of
    a driver name: the command line, a config file and :func:`create_camera`."""
    if not isinstance(driver, str) or driver not in DRIVERS:
        raise CameraError(f"unknown camera driver {driver!r} (known: {', '.join(sorted(DRIVERS))})")
    return driver


def create_camera(driver: str, config: CameraConfig, **options: Any) -> Camera:
    """Build (not start) a camera of the named driver; ``options`` go to its
    constructor beside ``config`` (a ``nats`` camera's bus prefix, credentials
    and viewer count: see :class:`cameras.nats.NatsCamera`).

    Raises CameraError for an unknown name, a missing dependency or a bad
    configuration, with a message for people.
    """
    module_name, class_name = DRIVERS[check_driver(driver)].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CameraError(f"camera driver {driver!r} is not available: {exc}") from exc
    cls: type[Camera] = getattr(module, class_name)
    return cls(config, **options)
