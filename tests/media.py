"""ffmpeg and ffprobe as the tests' judges of a recording: what they decode and when."""

from __future__ import annotations

import io
import itertools
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from recording.mkv import read_index


def require_ffmpeg() -> None:
    """Fail (not skip) when ffmpeg or ffprobe is missing: scripts/test.sh installs them."""
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run scripts/test.sh, which installs Debian's ffmpeg")


def probe(path: Path, *entries: str) -> dict:
    """ffprobe's JSON of ``entries`` (``stream=codec_name,width``, ``format=duration``...)."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_entries", ":".join(entries), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def packet_times(path: Path) -> list[float]:
    """The presentation time of every packet (frame) of ``path``, in seconds."""
    return [float(p["pts_time"]) for p in probe(path, "packet=pts_time")["packets"]]


def centre_colours(path: Path, size: tuple[int, int]) -> list[tuple[int, int, int]]:
    """The centre pixel of every frame ffmpeg decodes from ``path`` (none dropped or repeated)."""
    width, height = size
    command = ["ffmpeg", "-v", "error", "-i", str(path), "-fps_mode", "passthrough"]
    raw = subprocess.run(
        [*command, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    frame_bytes = width * height * 3
    assert len(raw) % frame_bytes == 0
    centre = ((height // 2) * width + width // 2) * 3
    return [tuple(raw[i + centre : i + centre + 3]) for i in range(0, len(raw), frame_bytes)]


def assert_plays(path: Path, size: tuple[int, int]) -> None:
    """``path`` is a finished segment, listed by ffprobe in time order, every frame
    decoded by ffmpeg and by Pillow at ``size``."""
    index = read_index(path)
    assert index.finished, path
    times = packet_times(path)
    assert len(times) == index.frame_count > 0, path
    assert all(b >= a for a, b in itertools.pairwise(times)), path
    assert len(centre_colours(path, size)) == len(times), path
    data = path.read_bytes()
    for _, offset, length in index.frames:
        with Image.open(io.BytesIO(data[offset : offset + length])) as picture:
            picture.load()
            assert picture.size == size
