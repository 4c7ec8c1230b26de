"""OpenCV: USB webcams and laptop cameras, video files, network streams.

``--source`` picks what to open:

* nothing, or a device index such as ``0``: a local camera.  The driver asks
  it for ``--width``/``--height``/``--fps`` (the device may grant something
  else; frames are served at the size it delivers).  ``read()`` blocks until
  the device has a frame, so captures are not paced.
* a path to a video file: played at the file's own frame rate (its
  ``CAP_PROP_FPS``; ``--fps`` when the file does not say) and looped.
* a URL (``rtsp://``, ``http://``...): opened through FFmpeg with open and read
  timeouts, so a dead stream is noticed within 1.5 s.  For an MJPEG-over-HTTP
  source prefer the ``mjpeg`` camera, which relays the JPEGs without decoding.

Every frame is read and encoded as JPEG (``--quality``) on the driver thread.
``cv2`` is imported here only, when an OpenCV camera is built.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from cameras.base import CameraConfig, ThreadedCamera
from frame import CameraError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install opencv-python-headless (or, in a checkout, pip install -e '.[opencv]')"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def import_cv2() -> ModuleType:
    """The ``cv2`` module, or CameraError with one line saying how to install it."""
    try:
        import cv2
    except ImportError as exc:
        raise CameraError(f"the opencv camera needs OpenCV, which is not installed: {INSTALL_HINT}") from exc
    return cv2


@dataclass(frozen=True)
class VideoSource:
    """What ``--source`` names: ``kind`` is "device", "file" or "stream"."""

    kind: str
    target: int | str
    #: For messages; a URL's password is left out.
    label: str


def parse_source(source: str | None) -> VideoSource:
    """Classify ``--source``; raises CameraError for a file path that does not exist."""
    text = (source or "").strip()
    if not text:
        return VideoSource("device", 0, "camera device 0")
    if text.isdigit():
        return VideoSource("device", int(text), f"camera device {int(text)}")
    if _URL.match(text):
        scheme, _, rest = text.partition("://")
        return VideoSource("stream", text, f"{scheme}://{rest.rpartition('@')[2]}")
    path = Path(text).expanduser()
    if path.is_file():
        return VideoSource("file", str(path), str(path))
    if path.exists():  # a device node such as /dev/video0
        return VideoSource("device", str(path), str(path))
    raise CameraError(f"--source {text}: no such video file (or give a device index such as 0, or a URL)")


class OpenCVCamera(ThreadedCamera):
    """Frames from ``cv2.VideoCapture``, encoded with ``cv2.imencode`` on the driver thread.

    Construction checks what is cheap to check (OpenCV installed, the file
    exists and OpenCV can read a frame of it) and raises CameraError.  Then
    ``open``/``capture``/``close`` run on the driver thread; ``capture``
    blocks in ``VideoCapture.read()`` and raises CameraError when the source
    stops delivering (a file is rewound at its end instead).  For a video file
    ``config.fps`` becomes the file's own frame rate.
    """

    driver = "opencv"
    #: FFmpeg timeouts for network streams, milliseconds (below the 5 s stop() waits).
    #: A stream silent for ``read_timeout_ms`` has failed: well inside the 2 s in
    #: which viewers are promised "no signal", above the second after which this
    #: server (as an upstream) sends its newest frame again.
    open_timeout_ms = 5000
    read_timeout_ms = 1500

    def __init__(self, config: CameraConfig) -> None:
        super().__init__(config)
        self._cv2 = import_cv2()
        self.source = parse_source(config.source)
        self._capture: Any = None
        self._encode_params = [self._cv2.IMWRITE_JPEG_QUALITY, int(config.quality)]
        # A device or a stream blocks in read() until its next frame; a file is paced.
        self.paced = self.source.kind == "file"
        if self.source.kind == "file":
            fps = self._probe_file()
            self.config = replace(config, fps=fps)

    def _probe_file(self) -> float:
        """Open the file once: can OpenCV read it, and at what rate does it play?"""
        cv2 = self._cv2
        capture = cv2.VideoCapture(self.source.target)
        try:
            ok, image = capture.read() if capture.isOpened() else (False, None)
            if not ok or image is None:
                raise CameraError(
                    f"--source {self.source.label}: OpenCV cannot read video frames from this file"
                )
            fps = capture.get(cv2.CAP_PROP_FPS)
            frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            capture.release()
        if not (math.isfinite(fps) and 0 < fps <= 1000):
            fps = self.config.fps
        height, width = image.shape[:2]
        log.info(
            "opencv camera: %s: %dx%d, %d frames at %.3g fps, looped",
            self.source.label,
            width,
            height,
            frames,
            fps,
        )
        return fps

    # -- driver thread ------------------------------------------------------------
    def open(self) -> None:
        """Open the device, file or stream (driver thread; may block for the open timeout)."""
        cv2, source = self._cv2, self.source
        if source.kind == "stream":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self.open_timeout_ms]
            params += [cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.read_timeout_ms]
            capture = cv2.VideoCapture(source.target, cv2.CAP_FFMPEG, params)
        else:
            capture = cv2.VideoCapture(source.target)
        self._capture = capture
        if not capture.isOpened():
            self.close()
            hint = " (is it plugged in and free?)" if source.kind == "device" else ""
            raise CameraError(f"cannot open {source.label}{hint}")
        if source.kind == "device":
            cfg = self.config
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
            capture.set(cv2.CAP_PROP_FPS, cfg.fps)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of old ones
            log.info(
                "opencv camera: %s opened at %dx%d, %.3g fps (asked for %dx%d, %.3g fps)",
                source.label,
                int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                capture.get(cv2.CAP_PROP_FPS),
                cfg.width,
                cfg.height,
                cfg.fps,
            )
        else:
            log.info("opencv camera: %s opened", source.label)

    def capture(self) -> tuple[bytes, int, int]:
        """Read one frame and encode it as JPEG (driver thread; blocks in read())."""
        capture = self._capture
        if capture is None:
            raise CameraError(f"{self.source.label} is not open")
        ok, image = capture.read()
        if not ok and self.source.kind == "file":
            ok, image = self._rewind()
        if not ok or image is None:
            raise CameraError(f"{self.source.label} stopped delivering frames")
        ok, encoded = self._cv2.imencode(".jpg", image, self._encode_params)
        if not ok:
            raise CameraError(f"{self.source.label}: JPEG encoding failed")
        height, width = image.shape[:2]
        return encoded.tobytes(), width, height

    def _rewind(self) -> tuple[bool, Any]:
        """At the end of a file, start again: seek to frame 0, or reopen if seeking fails."""
        capture = self._capture
        if capture.set(self._cv2.CAP_PROP_POS_FRAMES, 0):
            ok, image = capture.read()
            if ok:
                return ok, image
        self.close()
        self.open()
        return self._capture.read()

    def close(self) -> None:
        """Release the capture (driver thread); never raises."""
        capture, self._capture = self._capture, None
        if capture is not None:
            try:
                capture.release()
            except self._cv2.error as exc:
                log.warning("opencv camera: releasing %s failed: %s", self.source.label, exc)
