"""Fake ``MJPEGEncoder``: the hardware encoder's signature and bitrate presets, Pillow inside."""

from __future__ import annotations

import io
from typing import Any

from .._fake import STATE
from .encoder import Encoder, Quality

#: Suggested bitrates for 1080p30 in Mbps, as in the real encoder.
BITRATE_TABLE = {
    Quality.VERY_LOW: 16,
    Quality.LOW: 20,
    Quality.MEDIUM: 30,
    Quality.HIGH: 40,
    Quality.VERY_HIGH: 50,
}


class MJPEGEncoder(Encoder):
    def __init__(self, bitrate: int | None = None) -> None:
        super().__init__()
        self.bitrate = bitrate
        self.framerate: float | None = None
        STATE.record("MJPEGEncoder", bitrate=bitrate)

    def _setup(self, quality: Any) -> None:
        if quality is not None or self.bitrate is None:
            quality = Quality.MEDIUM if quality is None else quality
            reference_complexity = 1920 * 1080 * 30
            actual_complexity = self.width * self.height * (self.framerate or 30)
            self.bitrate = int(BITRATE_TABLE[quality] * 1_000_000 * actual_complexity / reference_complexity)

    def jpeg_quality(self) -> int:
        """Pillow quality standing in for the bitrate: bits per pixel, scaled."""
        bits_per_pixel = (self.bitrate or 0) / max(1, self.width * self.height * (self.framerate or 30))
        return max(5, min(95, round(bits_per_pixel * 150)))

    def _encode(self, stream: str, request: Any) -> None:
        fault = STATE.encoder_fault()  # the real one's ioctl(VIDIOC_QBUF) failing
        if fault is not None:
            raise fault
        out = io.BytesIO()
        request.image.save(out, format="JPEG", quality=self.jpeg_quality())
        with STATE.lock:
            STATE.frames_encoded += 1
        self.outputframe(out.getvalue(), keyframe=True, timestamp=self._timestamp(request))
