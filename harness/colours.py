"""Solid-colour pictures: what a files camera over :func:`write_colour_frames` shows,
and how a test or benchmark tells them apart again (:func:`nearest_colour`)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

#: Solid colours the files camera cycles through; tests read them back.
COLOURS = [
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (0, 255, 255),
    (255, 0, 255),
]


def jpeg(colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 48)) -> bytes:
    """A solid-colour JPEG."""
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="JPEG", quality=90)
    return out.getvalue()


def nearest_colour(rgb: tuple[int, ...]) -> int:
    """Index in COLOURS of the colour closest to ``rgb``."""
    return min(
        range(len(COLOURS)), key=lambda i: sum((a - b) ** 2 for a, b in zip(COLOURS[i], rgb[:3], strict=True))
    )


def write_colour_frames(folder: Path, size: tuple[int, int] = (160, 120)) -> Path:
    """One JPEG per colour of COLOURS in ``folder`` (``01.jpg``...), in order; ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate(COLOURS):
        (folder / f"{i + 1:02d}.jpg").write_bytes(jpeg(colour, size))
    return folder
