"""The "no signal" picture viewers see while a camera's source is failing."""

from __future__ import annotations

import io
import logging
import time
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

from frame import Frame

if TYPE_CHECKING:
    from cameras.base import CameraConfig

log = logging.getLogger(__name__)


def render_no_signal(
    name: str, width: int, height: int, when: float | None = None, quality: int = 70
) -> bytes:
    """A JPEG saying the camera ``name`` has no signal, stamped with the local time.

    CPU-bound (a few milliseconds): call it on a driver thread, not the IOLoop.
    """
    when = time.time() if when is None else when
    image = Image.new("RGB", (width, height), (28, 28, 30))
    draw = ImageDraw.Draw(image)
    stripe = max(2, height // 60)
    for y in range(0, height, stripe * 8):
        draw.rectangle([0, y, width, y + stripe - 1], fill=(36, 36, 40))
    big = ImageFont.load_default(size=max(10, height // 9))
    small = ImageFont.load_default(size=max(8, height // 20))
    lines = [
        ("NO SIGNAL", big, (235, 80, 70)),
        (name or "camera", small, (220, 220, 220)),
        (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)), small, (170, 170, 170)),
        ("reconnecting...", small, (140, 140, 140)),
    ]
    heights = [draw.textbbox((0, 0), text, font=font)[3] for text, font, _ in lines]
    gap = max(2, height // 40)
    y = (height - sum(heights) - gap * (len(lines) - 1)) // 2
    for (text, font, colour), line_h in zip(lines, heights, strict=True):
        line_w = draw.textlength(text, font=font)
        draw.text(((width - line_w) / 2, y), text, fill=colour, font=font)
        y += line_h + gap
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def no_signal_frame(config: CameraConfig, last: Frame | None, seq: int, name: str = "") -> Frame | None:
    """The "no signal" :class:`~frame.Frame` of a camera of ``config`` (``live``
    False, numbered ``seq``), at the size of its ``last`` frame (else its
    configured size), or None if it cannot be drawn (logged).  ``name``: the
    camera's name on the picture (default: the configured one).  CPU-bound (a few
    milliseconds): a driver's or a worker thread, never the IOLoop."""
    width, height = (last.width, last.height) if last else (config.width, config.height)
    name = name or config.name or "camera"
    try:
        jpeg = render_no_signal(name, width, height)
    except (OSError, ValueError) as exc:
        log.warning("%s: cannot draw the no-signal picture: %s", name, exc)
        return None
    return Frame(jpeg, seq, time.time(), width, height, live=False)
