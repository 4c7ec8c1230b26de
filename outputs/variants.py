"""Variants: a camera's frames at another size or quality, made once for all their viewers.

A viewer may ask for a smaller picture (``?width=W``) or another JPEG quality
(``?quality=Q``).  Each distinct (size, quality) is a *variant*: a frame
source like any driver (:class:`VariantEncoder`), behind a feed of its own
(:class:`~feed.FrameFeed`), so every viewer (MJPEG, WebSocket, snapshot)
and ``/status`` and ``/metrics`` treat it like a camera.  While it has a
viewer it keeps its parent camera running (a :meth:`~feed.FrameFeed.hold`);
:class:`Variants`, the one output of the camera's feed for all its
variants, leaves each parent frame in the running encoders' mailboxes on the
parent's source thread, and each encoder, on a thread of its own, decodes
the newest one and encodes it
again: one encode per frame whatever the number of its viewers, never on the
IOLoop, never a backlog (a frame that arrives while one is being encoded
replaces the one waiting).  It stops like a camera, ``idle_timeout_s`` after
its last viewer leaves.

Sizes snap to the source's width divided by 1, 2, 4 or 8 (:data:`outputs.sizes.SCALES`):
the reductions a JPEG decoder makes while decoding (libjpeg's scaled IDCT,
through Pillow's :meth:`~PIL.Image.Image.draft`), which cost less than a full
decode, so no resampling is ever done.  Qualities snap to
:data:`outputs.sizes.QUALITY_LEVELS`.  So a camera has few possible variants, and
``max_variants`` caps how many run at once.  A variant keeps the parent's
``seq`` and capture time, so a viewer moved between variants (adaptation)
never sees a frame twice or a time go backwards.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from tornado.ioloop import IOLoop

from cameras.base import Camera, CameraConfig
from cameras.jpeg import jpeg_size, same_jpeg
from feed import FrameFeed, Hold, Output, Subscriber
from frame import Frame, Newest
from outputs.adapt import Adaptation
from outputs.sizes import VariantKey, quality_level, scale_for, scaled

log = logging.getLogger(__name__)

#: Live variants per camera unless its ``max_variants`` says otherwise (the
#: default of ``--max-variants``, :attr:`settings.CameraSpec.max_variants`; not
#: imported from there: an output knows nothing of the option table).
DEFAULT_MAX_VARIANTS = 4
#: A variant with no viewer stops after this long at most (the camera's own
#: idle timeout if shorter): a variant costs CPU, a cold one starts in a frame.
VARIANT_IDLE_S = 5.0


def encode_variant(jpeg: bytes, scale: int, quality: int) -> tuple[bytes, int, int]:
    """``jpeg`` decoded at 1/``scale`` of its size (libjpeg's scaled decode) and
    encoded again at ``quality``: ``(jpeg, width, height)``.  Blocking, CPU
    (about a millisecond for 640x480 to 320x240; the GIL is let go meanwhile).
    Uses OpenCV when it is installed (its libjpeg-turbo build takes half
    Pillow's time here), else Pillow.  Raises ValueError for data that is not
    a readable JPEG."""
    codec = _opencv()
    if codec is not None:
        return _encode_opencv(codec, jpeg, scale, quality)
    return _encode_pillow(jpeg, scale, quality)


_OPENCV: list[Any] = []


def _opencv() -> Any:
    """The ``(cv2, numpy)`` modules, or None if OpenCV is not installed (looked up once)."""
    if not _OPENCV:
        try:
            import cv2
            import numpy
        except ImportError:
            _OPENCV.append(None)
        else:
            _OPENCV.append((cv2, numpy))
    return _OPENCV[0]


def _encode_opencv(codec: Any, jpeg: bytes, scale: int, quality: int) -> tuple[bytes, int, int]:
    cv2, numpy = codec
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}
    flag = flags.get(scale, cv2.IMREAD_REDUCED_COLOR_8)
    try:
        pixels = cv2.imdecode(numpy.frombuffer(jpeg, numpy.uint8), flag)
    except cv2.error as exc:
        raise ValueError(f"not a JPEG OpenCV can read: {exc}") from exc
    if pixels is None:
        raise ValueError("not a JPEG OpenCV can read")
    size = jpeg_size(jpeg)
    if size is not None and scale > 1:
        wanted = (scaled(size[0], scale), scaled(size[1], scale))
        if (pixels.shape[1], pixels.shape[0]) != wanted:
            # OpenCV reduces less for a size its scale does not divide: the rest by area.
            pixels = cv2.resize(pixels, wanted, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("OpenCV could not encode the frame")
    height, width = pixels.shape[:2]
    return encoded.tobytes(), width, height


def _encode_pillow(jpeg: bytes, scale: int, quality: int) -> tuple[bytes, int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(jpeg))
        if scale > 1:
            width, height = image.size
            mode = image.mode if image.mode in ("L", "RGB") else "RGB"
            # Pillow picks the reduction as size // asked: ask the floor, get libjpeg's ceiling.
            image.draft(mode, (max(1, width // scale), max(1, height // scale)))
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=quality)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"not a JPEG Pillow can read: {exc}") from exc
    return out.getvalue(), image.size[0], image.size[1]


class VariantEncoder(Camera):
    """The frames of ``parent`` (a feed) at ``key``'s scale and quality: a source
    for a feed of its own, fed by :class:`Variants` (an output of ``parent``).

    ``start`` (IOLoop thread) holds the parent's source running and starts the
    encode thread; ``stop`` (any thread, blocks briefly) ends it and releases
    the hold on the IOLoop.  :meth:`offer` (the parent's source thread) leaves
    a parent frame in a mailbox of one; the encode thread encodes the newest,
    live or "no signal"; a frame whose bytes equal the previous one's is not
    encoded again.
    """

    driver = "variant"

    def __init__(self, parent: FrameFeed, key: VariantKey) -> None:
        source = parent.camera.config
        quality = key.quality if key.quality is not None else source.quality
        width, height = key.size(source.width, source.height)
        super().__init__(
            CameraConfig(
                name=f"{parent.name}@{key.scale}q{quality}",
                width=width,
                height=height,
                fps=source.fps,
                quality=quality,
            )
        )
        self.parent = parent
        self.key = key
        self.quality = quality
        #: CPU seconds spent encoding (the encode thread's own time), frames
        #: encoded, and frames the encoder could not read.
        self.encode_cpu_s = 0.0
        self.frames_encoded = 0
        self.encode_errors = 0
        self._waiting: Newest[Frame] = Newest()
        self._waiting.close()  # nothing is taken before start()
        self._thread: threading.Thread | None = None
        self._hold: Hold | None = None
        self._loop: IOLoop | None = None

    @property
    def frames_superseded(self) -> int:
        """Parent frames replaced by a newer one before being encoded."""
        return self._waiting.superseded

    # -- the parent's source thread ---------------------------------------------
    def offer(self, frame: Frame) -> None:
        """Keep ``frame`` as the next to encode while running (never blocks)."""
        self._waiting.put(frame)

    # -- the contract -----------------------------------------------------------
    def start(self) -> None:
        """Hold the parent running and start encoding (IOLoop thread; returns at
        once).  Raises CameraError if the parent cannot start."""
        if self._thread is not None:
            return
        self._loop = IOLoop.current()
        self._hold = self.parent.hold(f"variant {self.config.width}x{self.config.height}")
        self._frame = None
        self._rate.reset()
        parent = self.parent.camera
        self._waiting.open(parent.latest() if parent.running else None)
        self._thread = threading.Thread(target=self._run, name=f"variant-{self.config.name}", daemon=True)
        self._thread.start()
        log.debug("%s: variant started", self.config.name)

    def stop(self) -> None:
        """Stop encoding and let the parent idle out (any thread; blocks until
        the encode thread has ended, at most one encode).  Idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._waiting.close()
        thread.join()
        hold, self._hold = self._hold, None
        if hold is not None and self._loop is not None:
            self._loop.add_callback(hold.release)
        log.debug("%s: variant stopped", self.config.name)

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def online(self) -> bool:
        return self.running and self.parent.camera.online

    @property
    def error(self) -> str | None:
        return self.parent.camera.error

    # -- the encode thread ------------------------------------------------------
    def _run(self) -> None:
        last_input: bytes | None = None
        while (frame := self._waiting.wait()) is not None:
            if last_input is not None and same_jpeg(frame.jpeg, last_input):
                continue
            last_input = frame.jpeg
            started = time.thread_time()
            try:
                jpeg, width, height = encode_variant(frame.jpeg, self.key.scale, self.quality)
            except ValueError as exc:
                self.encode_errors += 1
                if self.encode_errors == 1 or self.encode_errors % 1000 == 0:
                    log.warning("%s: cannot make a variant of a frame: %s", self.config.name, exc)
                continue
            finally:
                self.encode_cpu_s += time.thread_time() - started
            self.frames_encoded += 1
            self._publish_frame(Frame(jpeg, frame.seq, frame.timestamp, width, height, frame.live))


class Variants(Output):
    """The variants of one camera, made on demand: an output of the camera's feed.

    Attached to ``feed`` without a hold (:meth:`attach`), it takes each frame
    of the camera on its source's thread and leaves it with every variant
    encoder that runs (:meth:`put`), and each running variant holds the
    camera running.  At most ``max_variants`` run at once; asked for another
    then, a viewer gets the running variant (or the camera) nearest in size,
    so a page always gets a picture.  ``adaptation`` moves adaptive viewers
    between them (:class:`outputs.adapt.Adaptation`; made here if not given).
    ``make_feed`` builds the feed of a new variant (default: the camera's
    feed's repeat and stall timeouts, and at most :data:`VARIANT_IDLE_S` of
    idle time).  IOLoop thread, but :meth:`put`.
    """

    kind = "variants"

    def __init__(
        self,
        feed: FrameFeed,
        max_variants: int = DEFAULT_MAX_VARIANTS,
        *,
        adaptation: Adaptation | None = None,
        make_feed: Callable[[Camera, str], FrameFeed] | None = None,
    ) -> None:
        self.feed = feed
        self.max_variants = max_variants
        self.adaptation = adaptation or Adaptation(lambda: feed.camera.config.quality)
        self._make_feed = make_feed or self._default_feed
        self._feeds: dict[VariantKey, FrameFeed] = {}
        #: Every encoder made, replaced whole (copy on write) for the source's thread.
        self._encoders: tuple[VariantEncoder, ...] = ()
        #: Requests served by a variant other than the one asked for (the cap).
        self.substituted = 0
        self._cap_logged = False

    def attach(self) -> Variants:
        """Attach to the camera's feed (no hold: variants start with their viewers);
        returns self.  Raises ValueError if the feed has variants already."""
        self.feed.attach(self, hold=False)
        return self

    def _default_feed(self, camera: Camera, name: str) -> FrameFeed:
        parent = self.feed
        return FrameFeed(
            camera,
            name=name,
            idle_timeout_s=min(parent.idle_timeout_s, VARIANT_IDLE_S),
            repeat_after_s=parent.repeat_after_s,
            stall_timeout_s=parent.stall_timeout_s,
        )

    # -- the camera's source thread ---------------------------------------------
    def put(self, frame: Frame) -> None:
        """Leave ``frame`` with every running encoder (never blocks)."""
        for encoder in self._encoders:
            if encoder.running:
                encoder.offer(frame)

    # -- choosing ---------------------------------------------------------------
    def source_size(self) -> tuple[int, int]:
        """The camera's picture size now: its newest frame's, else its configured one."""
        camera = self.feed.camera
        frame = camera.latest() if camera.running else None
        if frame is not None:
            return frame.width, frame.height
        return camera.config.width, camera.config.height

    def size_known(self) -> bool:
        """Whether the camera has a frame now (else :meth:`source_size` is its configured size)."""
        camera = self.feed.camera
        return camera.running and camera.latest() is not None

    def key_for(self, width: int | None, quality: int | None) -> VariantKey:
        """The variant a request of ``width`` (pixels, None: full) and ``quality``
        (1-100, None: the camera's) snaps to."""
        scale = scale_for(width, self.source_size()[0]) if width else 1
        return VariantKey(scale, quality_level(quality) if quality is not None else None)

    def label(self, key: VariantKey) -> str:
        """``key``'s name in status and metrics (``"320x240 q80"``, ``"source"``)."""
        return key.label(*self.source_size(), self.feed.camera.config.quality)

    def live_keys(self) -> list[VariantKey]:
        """The variants running or wanted now."""
        return [key for key, feed in self._feeds.items() if feed.camera.running or feed.subscriber_count]

    def feed_for(self, key: VariantKey) -> tuple[FrameFeed, VariantKey]:
        """The feed serving ``key`` and the key it really serves: ``key``'s own
        (made if needed), the camera's for the source key or when variants are
        off (``max_variants`` 0), or the nearest live one when the cap is reached."""
        if key.is_source or self.max_variants <= 0:
            return self.feed, VariantKey()
        feed = self._feeds.get(key)
        if feed is not None and (feed.camera.running or feed.subscriber_count):
            return feed, key
        live = self.live_keys()
        if len(live) >= self.max_variants:
            self.substituted += 1
            if not self._cap_logged:
                self._cap_logged = True
                log.info(
                    "%s: %d variants run already (max_variants); serving the nearest one",
                    self.feed.name,
                    len(live),
                )
            nearest = min([VariantKey(), *live], key=lambda k: (abs(k.scale - key.scale), k.scale))
            return (self.feed if nearest.is_source else self._feeds[nearest]), nearest
        if feed is None:
            encoder = VariantEncoder(self.feed, key)
            feed = self._feeds[key] = self._make_feed(encoder, encoder.config.name)
            self._encoders = (*self._encoders, encoder)
        return feed, key

    # -- reporting and lifetime -------------------------------------------------
    def feeds(self) -> Iterator[tuple[VariantKey, FrameFeed]]:
        """Every variant ever made (running or not), smallest scale first."""
        return iter(sorted(self._feeds.items(), key=lambda item: (item[0].scale, item[0].quality or 0)))

    def viewers(self) -> list[Subscriber]:
        """The viewers of every variant (they count as the camera's)."""
        return [viewer for feed in self._feeds.values() for viewer in feed.all_viewers()]

    def status(self) -> dict[str, Any]:
        """``/status``'s ``"variants"``: the cap, the requests it substituted, the
        adaptation's moves, and each variant made so far by label (its size,
        quality, viewers and costs) in ``"sizes"``."""
        sizes: dict[str, dict[str, Any]] = {}
        for key, feed in self.feeds():
            encoder: VariantEncoder = feed.camera  # type: ignore[assignment]
            frame = encoder.latest() if encoder.running else None
            width, height = (frame.width, frame.height) if frame else key.size(*self.source_size())
            sizes[self.label(key)] = {
                "width": width,
                "height": height,
                "scale": key.scale,
                "quality": encoder.quality,
                "running": encoder.running,
                "subscribers": feed.subscriber_count,
                "viewers": feed.viewers_by_kind(),
                "frames_encoded": encoder.frames_encoded,
                "frames_superseded": encoder.frames_superseded,
                "encode_errors": encoder.encode_errors,
                "encode_cpu_seconds": round(encoder.encode_cpu_s, 4),
                "fps_measured": round(encoder.measured_fps, 2),
                "frame_bytes": len(frame.jpeg) if frame else None,
                "frames_sent": feed.frames_sent,
                "bytes_sent": feed.bytes_sent,
                "frames_skipped": feed.frames_skipped,
            }
        return {
            "max_variants": self.max_variants,
            "substituted": self.substituted,
            "adaptive_viewers": len(self.adaptation),
            "adapt_steps": {"down": self.adaptation.steps_down, "up": self.adaptation.steps_up},
            "sizes": sizes,
        }

    def close(self) -> asyncio.Future[Any] | None:
        """Close every variant's feed: their viewers end, their encoders stop
        (IOLoop thread).  The future is done when they have."""
        closing = [done for done in (feed.close() for feed in self._feeds.values()) if done is not None]
        self.adaptation.close()
        return asyncio.gather(*closing) if closing else None
