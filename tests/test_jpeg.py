"""cameras/jpeg.py: the marker walker, on JPEGs Pillow writes and on broken ones."""

from __future__ import annotations

import io
import itertools

import pytest
from PIL import Image

from cameras.jpeg import SOF_MARKERS, SOI, first_comment, header_end, insert_comment, jpeg_size, segments


def pillow_jpeg(size: tuple[int, int], **options) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, format="JPEG", **options)
    return out.getvalue()


@pytest.mark.parametrize(
    ("size", "options"),
    [
        ((64, 48), {}),
        ((1920, 1080), {"progressive": True}),
        ((333, 17), {"icc_profile": b"x" * 3000, "exif": b"Exif\x00\x00" + b"\x00" * 64}),
        ((1, 65500), {}),
        ((300, 2), {"subsampling": 0}),
    ],
)
def test_jpeg_size_reads_the_start_of_frame_header(size, options):
    assert jpeg_size(pillow_jpeg(size, **options)) == size


def test_jpeg_size_refuses_what_it_cannot_read():
    data = pillow_jpeg((640, 480))
    assert jpeg_size(b"") is None
    assert jpeg_size(b"GIF89a" + data) is None
    assert jpeg_size(data[:20]) is None  # cut before the SOF
    # Fill bytes before a marker are allowed.
    assert jpeg_size(b"\xff\xd8\xff\xff" + data[3:]) == (640, 480)
    # A scan before any SOF: no size.
    assert jpeg_size(b"\xff\xd8\xff\xda\x00\x08" + b"\x00" * 20) is None


def test_segments_walk_the_headers_up_to_the_scan():
    data = pillow_jpeg((64, 48), exif=b"Exif\x00\x00" + b"\x00" * 16)
    found = list(segments(data))
    assert found[0].start == 2 and found[-1].marker == 0xDA
    assert any(s.marker in SOF_MARKERS for s in found)
    for before, after in itertools.pairwise(found):
        assert before.end == after.start  # back to back, nothing skipped
    assert list(segments(b"GIF89a")) == []
    assert list(segments(data[:30]))[-1].end <= 30  # a cut segment ends the walk


@pytest.mark.parametrize(
    "options", [{}, {"exif": b"Exif\x00\x00" + b"\x00" * 40}, {"icc_profile": b"p" * 500}]
)
def test_a_comment_goes_after_the_app_headers_and_comes_back_out(options):
    data = pillow_jpeg((80, 60), **options)
    at = header_end(data)
    assert all(s.marker in range(0xE0, 0xF0) for s in segments(data) if s.end <= at)
    marked = insert_comment(data, b"camstream seq=7 t=1.5")
    assert marked[:at] == data[:at] and marked.startswith(SOI)
    text, start, end = first_comment(marked)
    assert (text, start) == (b"camstream seq=7 t=1.5", at)
    assert marked[:start] + marked[end:] == data
    with Image.open(io.BytesIO(marked)) as image:  # still a JPEG every decoder reads
        image.load()
        assert image.size == (80, 60)
    assert first_comment(data) is None
    assert insert_comment(b"not a jpeg", b"x") == b"not a jpeg"
