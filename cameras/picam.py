"""The Raspberry Pi camera through picamera2, encoded by the library's MJPEGEncoder.

The driver follows Raspberry Pi's own MJPEG streaming example::

    picam2 = Picamera2(camera_num)
    picam2.configure(picam2.create_video_configuration(
        main={"size": (width, height)}, controls={"FrameRate": fps}))
    picam2.start_recording(MJPEGEncoder(), FileOutput(output), quality=Quality.HIGH)
    ...
    picam2.stop_recording()
    picam2.close()

``MJPEGEncoder`` is the hardware encoder on the boards that have one, and the
library substitutes its software (libav) encoder elsewhere; either way the
JPEGs are made by picamera2's threads and handed to ``output.write()``, which
keeps only the newest one.  The driver thread waits for it and publishes it,
so neither this process's IOLoop nor the driver thread ever encodes a picture.

Quality: ``--quality`` 1-100 maps to the library's five presets, passed as
``start_recording(..., quality=...)``, which sets the encoder's bitrate (the
hardware encoder) or quantiser (libav) scaled to the picture size and frame
rate: 1-20 VERY_LOW, 21-40 LOW, 41-60 MEDIUM, 61-80 HIGH, 81-100 VERY_HIGH.

picamera2 exists only on a Raspberry Pi, installed from the OS packages: it is
imported when a camera of this driver is built, and elsewhere that fails with
one line saying so.
"""

from __future__ import annotations

import io
import logging
import threading
from dataclasses import dataclass
from typing import Any

from cameras.base import CameraConfig, ThreadedCamera
from cameras.jpeg import jpeg_size
from frame import CameraError

log = logging.getLogger(__name__)

MISSING = (
    "the picamera2 camera needs the picamera2 library, which exists only on a Raspberry Pi: "
    "install it with 'sudo apt install python3-picamera2' and make the virtualenv with "
    "'python3 -m venv --system-site-packages'"
)

#: Upper bounds of --quality for each of picamera2's Quality presets, lowest first.
QUALITY_STEPS = (
    (20, "VERY_LOW"),
    (40, "LOW"),
    (60, "MEDIUM"),
    (80, "HIGH"),
    (100, "VERY_HIGH"),
)


def quality_preset(quality: int) -> str:
    """The name of the picamera2 ``Quality`` preset for a JPEG quality of 1-100."""
    for upper, name in QUALITY_STEPS:
        if quality <= upper:
            return name
    return QUALITY_STEPS[-1][1]


@dataclass(frozen=True)
class Library:
    """The parts of picamera2 the driver uses."""

    Picamera2: Any
    MJPEGEncoder: Any
    Quality: Any
    FileOutput: Any


def import_picamera2() -> Library:
    """Import picamera2, or raise CameraError with one line saying how to get it."""
    try:
        from picamera2 import Picamera2
        from picamera2.encoders import MJPEGEncoder, Quality
        from picamera2.outputs import FileOutput
    except ImportError as exc:
        raise CameraError(MISSING) from exc
    return Library(Picamera2, MJPEGEncoder, Quality, FileOutput)


class LatestJpeg(io.BufferedIOBase):
    """The file object picamera2's ``FileOutput`` writes each encoded JPEG to.

    ``write`` runs on picamera2's encoder thread and only swaps a reference, so
    the encoder is never held up; older frames are dropped, never queued.
    ``wait_newer`` runs on the driver thread.
    """

    def __init__(self) -> None:
        super().__init__()
        self._changed = threading.Condition()
        self._jpeg: bytes | None = None
        self._count = 0
        self._woken = False

    def writable(self) -> bool:
        return True

    def write(self, buf: Any) -> int:
        """Keep ``buf`` (one complete JPEG) as the newest frame; returns its length."""
        data = bytes(buf)  # the encoder may reuse its buffer once write() returns
        with self._changed:
            self._jpeg = data
            self._count += 1
            self._changed.notify_all()
        return len(data)

    def latest(self) -> tuple[int, bytes | None]:
        """``(frames written so far, the newest JPEG or None)``; never blocks."""
        with self._changed:
            return self._count, self._jpeg

    def wait_newer(self, seen: int, timeout_s: float) -> tuple[int, bytes] | None:
        """Block until more than ``seen`` frames have been written, up to ``timeout_s``.

        Returns ``(count, newest JPEG)``, or None on timeout or after :meth:`wake`.
        """
        with self._changed:
            self._changed.wait_for(lambda: self._count > seen or self._woken, timeout_s)
            if self._count > seen and self._jpeg is not None:
                return self._count, self._jpeg
            return None

    def wake(self) -> None:
        """Make every present and future ``wait_newer`` return at once (any thread)."""
        with self._changed:
            self._woken = True
            self._changed.notify_all()


class PiCamera(ThreadedCamera):
    """A Raspberry Pi camera (``--source`` is the camera number, default 0).

    ``open`` (driver thread) opens and configures the camera and starts
    recording into a :class:`LatestJpeg`; ``capture`` waits for the next JPEG
    and raises CameraError when none comes for ``frame_timeout_s`` (the first
    one gets ``first_frame_timeout_s``); ``close`` stops recording and closes
    the camera, so another process can open it.  Construction raises
    CameraError when picamera2 is missing or ``--source`` is not a number.

    A camera that stops sending (a loose cable, an encoder whose ioctl failed,
    which ends the library's event loop) is noticed within ``frame_timeout_s``,
    well inside the 2 s in which viewers are promised "no signal"; and since a
    reopened camera that still fails is noticed within ``first_frame_timeout_s``,
    the attempts come about every 2 s, so the camera is back within 3 s of the
    fault clearing.
    """

    driver = "picamera2"
    paced = False  # the camera runs at the configured frame rate by itself
    #: At least this long, or six frame intervals, for a started camera's first JPEG
    #: (the library drops a few frames while the sensor settles).
    first_frame_timeout_s = 1.0
    #: At least this long, or three frame intervals, without a frame is a failure.
    frame_timeout_s = 1.0

    def __init__(self, config: CameraConfig) -> None:
        super().__init__(config)
        self._lib = import_picamera2()
        source = (config.source or "0").strip()
        if not source.isdigit():
            raise CameraError(f"--source {source}: the picamera2 camera takes a camera number such as 0")
        self.camera_num = int(source)
        self._picam2: Any = None
        self._recording = False
        self._output: LatestJpeg | None = None
        self._seen = 0

    def wake(self) -> None:
        """Unblock the driver thread's wait for a frame, so stop() returns once
        the camera is released (IOLoop thread)."""
        output = self._output
        if output is not None:
            output.wake()

    # -- driver thread ------------------------------------------------------------
    def open(self) -> None:
        """Open, configure and start recording (driver thread; blocks while the camera starts)."""
        lib, cfg = self._lib, self.config
        try:
            self._picam2 = lib.Picamera2(self.camera_num)
        except (RuntimeError, IndexError, OSError) as exc:
            raise CameraError(f"cannot open the Pi camera {self.camera_num}: {exc}") from exc
        try:
            picam2 = self._picam2
            video = picam2.create_video_configuration(
                main={"size": (cfg.width, cfg.height)}, controls={"FrameRate": cfg.fps}
            )
            picam2.configure(video)
            output = LatestJpeg()
            if self.stopping:
                output.wake()
            self._output, self._seen = output, 0
            quality = getattr(lib.Quality, quality_preset(cfg.quality))
            picam2.start_recording(lib.MJPEGEncoder(), lib.FileOutput(output), quality=quality)
            self._recording = True
        except (RuntimeError, ValueError, OSError) as exc:
            self.close()
            raise CameraError(f"the Pi camera {self.camera_num} cannot record: {exc}") from exc
        except BaseException:
            self.close()
            raise
        log.info(
            "picamera2 camera %d recording %dx%d at %.3g fps, quality %s",
            self.camera_num,
            cfg.width,
            cfg.height,
            cfg.fps,
            quality.name,
        )

    def capture(self) -> tuple[bytes, int, int] | None:
        """Wait for the encoder's next JPEG and return it (driver thread, blocks)."""
        output = self._output
        if output is None:
            raise CameraError(f"the Pi camera {self.camera_num} is not recording")
        interval_s = 1.0 / self.config.fps if self.config.fps > 0 else 0.0
        if self._seen == 0:
            timeout_s = max(self.first_frame_timeout_s, 6 * interval_s)
        else:
            timeout_s = max(self.frame_timeout_s, 3 * interval_s)
        got = output.wait_newer(self._seen, timeout_s)
        if got is None:
            if self.stopping:
                return None
            # The same words for every attempt: one warning per outage, not one per retry.
            raise CameraError(f"the Pi camera {self.camera_num} is sending no frames")
        self._seen, jpeg = got
        width, height = jpeg_size(jpeg) or (self.config.width, self.config.height)
        return jpeg, width, height

    def close(self) -> None:
        """Stop the library's event loop and recording, then close the camera (driver
        thread); never raises.

        The event loop goes first: ``stop_recording`` asks that loop to stop the
        camera and waits for it, for ever once the loop has died (an exception in an
        encoder's ``encode``, such as its ioctl failing, ends the loop's thread).
        With the loop stopped, ``stop_recording`` stops the camera on this thread,
        as ``Picamera2.close`` itself does (``stop_preview``, then ``stop``).
        """
        picam2, self._picam2 = self._picam2, None
        recording, self._recording = self._recording, False
        self._output = None
        if picam2 is None:
            return
        if recording:
            try:
                picam2.stop_preview()
            except RuntimeError as exc:  # no event loop ran (none was started)
                log.debug("picamera2 camera %d: stop_preview: %s", self.camera_num, exc)
            try:
                picam2.stop_recording()
            except (RuntimeError, OSError) as exc:
                log.warning("picamera2 camera %d: stop_recording failed: %s", self.camera_num, exc)
        try:
            picam2.close()
        except (RuntimeError, OSError) as exc:
            log.warning("picamera2 camera %d: close failed: %s", self.camera_num, exc)
