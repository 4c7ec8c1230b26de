"""What a viewer asks for (``?width=``, ``?quality=``, ``?adapt=``) and what it gets.

Every stream handler (MJPEG, WebSocket) is a :class:`VariantViewer`: it
joins the feed of the variant it asked for (or the camera's own feed),
through the camera's :class:`~outputs.variants.Variants` (given to the
handler by the URL table), and, when it adapts, their
:class:`~outputs.adapt.Adaptation` moves it between variants.  The snapshot
handler takes the same ``width`` and ``quality``.
IOLoop thread only.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import tornado.web
from tornado.ioloop import IOLoop

from feed import FrameFeed
from frame import CameraError
from outputs.sizes import MAX_WIDTH, VariantKey
from outputs.variants import Variants

log = logging.getLogger(__name__)

#: Unsent bytes an adaptive viewer's socket may hold (``TCP_NOTSENT_LOWAT``):
#: without it the kernel queues seconds of frames for a slow link before the
#: server sees the viewer is behind, and every frame it gets is that old.
NOTSENT_LOWAT_BYTES = 32 * 1024
_TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)

WIDTH_RULE = f"width must be a whole number of pixels, 1-{MAX_WIDTH}"
QUALITY_RULE = "quality must be a whole number, 1-100"
ADAPT_RULE = "adapt must be 0 or 1"
#: How long a viewer that asked for a width waits for a cold camera's first
#: frame, to snap that width against the camera's real size, seconds.
SNAP_WAIT_S = 10.0


class BadRequest(ValueError):
    """A viewer's parameter is out of range; the message names the allowed values."""


def _whole(value: str | int | float | None, high: int, rule: str) -> int | None:
    """A whole number 1-``high`` from a query's text or a control message's number;
    None when absent.  Raises BadRequest(``rule``) for anything else (a boolean too)."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= len(str(high)):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise BadRequest(rule)
    return value


def parse_width(text: str | int | float | None) -> int | None:
    """``?width=`` (text) or a control message's ``width`` (a number): pixels,
    or None when absent (full size).  Raises BadRequest (``0`` too: a control
    message's 0 means full size, its handler's business)."""
    return _whole(text, MAX_WIDTH, WIDTH_RULE)


def parse_quality(text: str | int | float | None) -> int | None:
    """``?quality=`` or a control message's ``quality``: 1-100, or None (the
    camera's own).  Raises BadRequest."""
    return _whole(text, 100, QUALITY_RULE)


def parse_adapt(text: str | None, default: bool) -> bool:
    """``?adapt=0`` or ``1``; ``default`` when absent.  Raises BadRequest."""
    if text is None:
        return default
    if text in ("0", "1"):
        return text == "1"
    raise BadRequest(ADAPT_RULE)


def variant_args(
    handler: tornado.web.RequestHandler, adapt_default: bool | None = None
) -> tuple[int | None, int | None, bool]:
    """``(width, quality, adapt)`` of a request's query (``adapt_default`` None:
    the request takes no ``adapt``).  Raises BadRequest naming the allowed values."""
    args = handler.request.query_arguments

    def one(name: str) -> str | None:
        values = args.get(name)
        if not values:
            return None
        try:
            return values[-1].decode("ascii")
        except UnicodeDecodeError:
            return "?"  # not ASCII: refused by the parser with its rule

    width = parse_width(_blank_to_none(one("width")))
    quality = parse_quality(_blank_to_none(one("quality")))
    adapt = parse_adapt(one("adapt"), adapt_default) if adapt_default is not None else False
    return width, quality, adapt


def _blank_to_none(text: str | None) -> str | None:
    """An empty ``?width=`` is refused like any non-number (it is not "absent")."""
    return "?" if text == "" else text


class VariantViewer:
    """A viewer of a camera (``self.feed``) that watches one of its variants.

    The handler calls :meth:`_viewer_init` with the camera's variants (whose
    ``feed`` is the camera's own), sets ``kind``, and calls
    :meth:`join_variant` when its stream starts and :meth:`leave_variant`
    when it ends.  ``on_feed`` is the feed it is attached to now (the
    camera's, or a variant's); ``key`` the variant it gets, ``asked`` the one
    it asked for.
    """

    feed: FrameFeed
    variants: Variants
    kind: str

    def _viewer_init(self, variants: Variants) -> None:
        self.variants = variants
        self.feed = variants.feed
        self.on_feed: FrameFeed | None = None
        self.asked = VariantKey()
        self.key = VariantKey()
        self.adaptive = False
        self.asked_width: int | None = None
        self.asked_quality: int | None = None

    def join_variant(self, width: int | None, quality: int | None, adapt: bool) -> None:
        """Attach to the variant of ``width`` and ``quality`` (the source's for
        None, None) and adapt if ``adapt``.  Raises CameraError (the camera, or
        the variant, cannot start)."""
        variants = self.variants
        self.asked_width, self.asked_quality = width, quality
        known = variants.size_known()  # before the subscription starts the camera
        self.asked = variants.key_for(width, quality)
        feed, self.key = variants.feed_for(self.asked)
        feed.subscribe(self)  # type: ignore[arg-type]
        self.on_feed = feed
        self.adaptive = adapt
        if adapt:
            variants.adaptation.add(self, self.asked, self.key)
        if width is not None and not known:
            # Snapped to the configured size; the camera's first frame tells the real one.
            IOLoop.current().add_callback(self._snap_again_when_framed)

    async def _snap_again_when_framed(self) -> None:
        """Once the cold camera has its first frame, snap the asked width again
        against its real size (a camera that is not the size it was configured
        at: a relay, a folder of files)."""
        try:
            await self.feed.snapshot(SNAP_WAIT_S)
        except (CameraError, TimeoutError):
            return  # no picture: nothing to snap against; the viewer keeps what it has
        self.ask_variant(self.asked_width, self.asked_quality, again=True)

    def ask_variant(self, width: int | None, quality: int | None, again: bool = False) -> None:
        """A new request (a WebSocket's control message) of the same viewer: move
        to the variant it names, or as far down as adaptation has it.  ``again``:
        the same request, snapped anew (the camera's size is known now)."""
        if self.on_feed is None:
            return
        variants = self.variants
        self.asked_width, self.asked_quality = width, quality
        asked = variants.key_for(width, quality)
        if asked == self.asked and not again:
            return
        self.asked = asked
        if self.adaptive:
            adaptation = variants.adaptation
            adaptation.add(self, asked, self.key)
            target = adaptation.target(self) or asked
        else:
            target = asked
        self.adapt_to(target, "asked")

    def leave_variant(self) -> None:
        """Detach (idempotent)."""
        if self.adaptive:
            self.variants.adaptation.discard(self)
        feed, self.on_feed = self.on_feed, None
        if feed is not None:
            feed.unsubscribe(self)  # type: ignore[arg-type]

    # -- outputs.adapt.Adaptive ---------------------------------------------------
    def adapt_counters(self) -> tuple[int, int] | None:
        feed = self.on_feed
        if feed is None:
            return None
        skipped = feed.skipped_by(self)  # type: ignore[arg-type]
        return None if skipped is None else (feed.frames_new, skipped)

    def adapt_to(self, key: VariantKey, reason: str) -> VariantKey:
        """Move to ``key``'s variant (or the one the cap gives); returns what it got."""
        if self.on_feed is None:
            return self.key
        feed, got = self.variants.feed_for(key)
        if feed is not self.on_feed:
            try:
                self.on_feed.move(self, feed)  # type: ignore[arg-type]
            except CameraError as exc:
                log.warning("%s: cannot move a viewer to another variant: %s", self.feed.name, exc)
                return self.key
            self.on_feed = feed
        if got != self.key:
            self.key = got
            log.debug("%s viewer: now on %s (%s)", self.kind, self.variants.label(got), reason)
            self.variant_changed(reason)
        return got

    def variant_changed(self, reason: str) -> None:
        """Called after the viewer moved to another variant (a WebSocket tells its client)."""

    # -- reporting ----------------------------------------------------------------
    def variant_info(self) -> dict[str, Any]:
        """The variant this viewer gets: size, quality, label, whether adaptation moved it."""
        variants = self.variants
        width, height = self.key.size(*variants.source_size())
        quality = self.key.quality if self.key.quality is not None else self.feed.camera.config.quality
        return {
            "width": width,
            "height": height,
            "quality": quality,
            "variant": variants.label(self.key),
            "asked": variants.label(self.asked),
            "adapt": self.adaptive,
            "adapted": self.key != self.asked,
        }

    def client_info(self) -> dict[str, Any]:
        """One viewer in ``/status``'s ``clients``."""
        info: dict[str, Any] = {
            "kind": self.kind,
            "remote": self.request.remote_ip,  # type: ignore[attr-defined]
            **self.variant_info(),
        }
        feed = self.on_feed
        if feed is not None:
            info["frames_skipped"] = feed.skipped_by(self)  # type: ignore[arg-type]
        if self.adaptive:
            info["adaptation"] = self.variants.adaptation.describe(self)
        return info


def limit_unsent(sock: socket.socket | None) -> None:
    """Cap the unsent bytes the kernel queues for ``sock`` (see
    :data:`NOTSENT_LOWAT_BYTES`); a platform without the option keeps its default."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_NOTSENT_LOWAT, NOTSENT_LOWAT_BYTES)
    except OSError as exc:
        log.debug("cannot set TCP_NOTSENT_LOWAT: %s", exc)
