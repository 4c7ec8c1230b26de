"""Which variants a camera may have: the sizes and qualities a request snaps to.

Pure functions and a frozen key, shared by the variants
(:mod:`outputs.variants`), the adaptation (:mod:`outputs.adapt`) and the
handlers that read a viewer's ``?width=`` and ``?quality=``; any thread.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The reductions of the source's width (and height) a variant may have.
SCALES = (1, 2, 4, 8)
#: The JPEG qualities a variant may be encoded at; ``?quality=Q`` takes the
#: highest level at most Q (the lowest below it).
QUALITY_LEVELS = (30, 50, 70, 85, 95)
#: The largest width a request may name (JPEG's limit).
MAX_WIDTH = 65535


def scaled(size: int, scale: int) -> int:
    """``size`` pixels reduced by ``scale`` as a JPEG decoder does it (rounded up)."""
    return -(-size // scale)


def quality_level(quality: int) -> int:
    """The level of :data:`QUALITY_LEVELS` that ``quality`` (1-100) snaps to."""
    return max([q for q in QUALITY_LEVELS if q <= quality] or [QUALITY_LEVELS[0]])


def scale_for(width: int, source_width: int) -> int:
    """The largest reduction of :data:`SCALES` whose width is still at least
    ``width`` (1 for a width at or above the source's)."""
    best = 1
    for scale in SCALES:
        if scaled(source_width, scale) >= width:
            best = scale
    return best


@dataclass(frozen=True)
class VariantKey:
    """Which variant: the reduction of the source's size and the JPEG quality
    (None: the camera's own quality).  ``VariantKey(1, None)`` is the camera itself."""

    scale: int = 1
    quality: int | None = None

    @property
    def is_source(self) -> bool:
        return self.scale == 1 and self.quality is None

    def size(self, source_width: int, source_height: int) -> tuple[int, int]:
        """This variant's picture size for a source of the given size."""
        return scaled(source_width, self.scale), scaled(source_height, self.scale)

    def label(self, source_width: int, source_height: int, camera_quality: int) -> str:
        """How status and metrics name it: ``"320x240 q80"``, or ``"source"``."""
        if self.is_source:
            return "source"
        width, height = self.size(source_width, source_height)
        return f"{width}x{height} q{self.quality if self.quality is not None else camera_quality}"
