"""A camera that cycles the JPEG files of a folder, served as they are."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from cameras.base import CameraConfig, ThreadedCamera
from frame import CameraError

log = logging.getLogger(__name__)

JPEG_SUFFIXES = {".jpg", ".jpeg"}


def load_jpegs(folder: str | None) -> list[tuple[bytes, int, int]]:
    """Read every JPEG of ``folder`` sorted by name, as ``(bytes, width, height)``.

    Blocking file I/O; raises CameraError with a message naming the problem.
    """
    if not folder:
        raise CameraError("the files camera needs --source DIR, a folder of .jpg files")
    path = Path(folder)
    if not path.is_dir():
        raise CameraError(f"--source {folder}: not a folder")
    names = sorted(p for p in path.iterdir() if p.suffix.lower() in JPEG_SUFFIXES and p.is_file())
    if not names:
        raise CameraError(f"--source {folder}: no .jpg or .jpeg files in this folder")
    frames = []
    for name in names:
        try:
            data = name.read_bytes()
            with Image.open(io.BytesIO(data)) as image:
                if image.format != "JPEG":
                    raise CameraError(f"{name}: not a JPEG file")
                width, height = image.size
        except (OSError, UnidentifiedImageError) as exc:
            raise CameraError(f"{name}: cannot read it as a JPEG ({exc})") from exc
        frames.append((data, width, height))
    log.info("files camera: %d JPEGs from %s", len(frames), path)
    return frames


class FilesCamera(ThreadedCamera):
    """Cycles the JPEGs of ``--source DIR`` (sorted by name) at ``--fps``, byte for byte."""

    driver = "files"

    def __init__(self, config: CameraConfig) -> None:
        super().__init__(config)
        self._frames = load_jpegs(config.source)
        self._index = 0

    def capture(self) -> tuple[bytes, int, int]:
        frame = self._frames[self._index]
        self._index = (self._index + 1) % len(self._frames)
        return frame
