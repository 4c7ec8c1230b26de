"""The default camera: a moving test picture, no hardware needed.

Encoding a JPEG costs milliseconds, so the picture is a loop of frames that
are encoded once, on the driver thread, the first time each is shown; every
later pass of the loop serves the stored bytes.  Each frame differs from its
neighbours (a sweeping bar, a rotating hand and a frame counter), so a viewer
sees motion and a test can tell frames apart.
"""

from __future__ import annotations

import io
import math

from PIL import Image, ImageDraw, ImageFont

from cameras.base import CameraConfig, ThreadedCamera

#: The loop lasts this long at the configured frame rate.
from frame import CameraError

LOOP_S = 2.0
MAX_LOOP_FRAMES = 120

_BARS = [
    (192, 192, 192),
    (192, 192, 0),
    (0, 192, 192),
    (0, 192, 0),
    (192, 0, 192),
    (192, 0, 0),
    (0, 0, 192),
]


def loop_length(fps: float) -> int:
    """How many distinct frames the emulated loop has at ``fps``."""
    return max(2, min(MAX_LOOP_FRAMES, round(fps * LOOP_S)))


def render_frame(
    index: int, count: int, width: int, height: int, quality: int, title: str = "emulated camera"
) -> bytes:
    """Encode frame ``index`` of a loop of ``count`` as JPEG bytes (blocking, CPU)."""
    image = Image.new("RGB", (width, height), (24, 24, 32))
    draw = ImageDraw.Draw(image)
    bar_h = height // 3
    bar_w = width / len(_BARS)
    for i, colour in enumerate(_BARS):
        draw.rectangle([round(i * bar_w), 0, round((i + 1) * bar_w) - 1, bar_h], fill=colour)
    phase = index / count
    # A bright bar sweeping left to right across the whole picture.
    sweep_x = round(phase * width)
    sweep_w = max(4, width // 40)
    draw.rectangle([sweep_x, 0, sweep_x + sweep_w, height - 1], fill=(255, 255, 255))
    # A hand going once round the dial per loop.
    radius = min(width, height) // 5
    cx, cy = width * 3 // 4, bar_h + (height - bar_h) // 2
    draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=(230, 230, 230), width=3)
    angle = 2 * math.pi * phase - math.pi / 2
    hand = (cx + radius * 0.9 * math.cos(angle), cy + radius * 0.9 * math.sin(angle))
    draw.line([(cx, cy), hand], fill=(255, 80, 80), width=max(2, radius // 12))
    font_px = max(10, height // 12)
    font = ImageFont.load_default(size=font_px)
    text_x = max(4, width // 20)
    draw.text((text_x, bar_h + font_px // 2), title, fill=(240, 240, 240), font=font)
    draw.text((text_x, bar_h + font_px * 2), f"frame {index + 1:3d}/{count}", fill=(255, 220, 90), font=font)
    draw.text((text_x, bar_h + font_px * 7 // 2), f"{width}x{height}", fill=(160, 200, 255), font=font)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


class EmulatedCamera(ThreadedCamera):
    """A test picture at the configured size and frame rate; ``source`` is ignored."""

    driver = "emulated"

    def __init__(self, config: CameraConfig) -> None:
        super().__init__(config)
        if config.source:
            raise CameraError("the emulated camera takes no --source")
        self._loop: list[bytes | None] = [None] * loop_length(config.fps)
        self._index = 0

    def capture(self) -> tuple[bytes, int, int]:
        index = self._index
        self._index = (index + 1) % len(self._loop)
        jpeg = self._loop[index]
        if jpeg is None:
            cfg = self.config
            named = cfg.name and cfg.name != self.driver
            title = f"{cfg.name} (emulated)" if named else "emulated camera"
            jpeg = render_frame(index, len(self._loop), cfg.width, cfg.height, cfg.quality, title)
            self._loop[index] = jpeg
        return jpeg, self.config.width, self.config.height
