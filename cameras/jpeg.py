"""The one walker of a JPEG's marker segments, and what is read with it.

A JPEG starts with SOI (``FF D8``) and a run of marker segments (``FF xx``,
most with a two-byte big-endian length that counts itself) before the
entropy-coded picture data, which starts after SOS (``FF DA``).  Everything
the server needs to know of a frame without decoding it is in those
segments: the picture size (a SOF segment), where a comment may be inserted
(after the APPn segments), and the ``camstream`` comment of a WebSocket
message.  Every function here is pure, takes microseconds and may be called
from any thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
COM = 0xFE
SOS = 0xDA
#: Start-of-frame markers (SOF0-SOF15 but DHT, JPG and DAC) carry the picture size.
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
APP_MARKERS = frozenset(range(0xE0, 0xF0))
#: Markers without a length field.
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD9)})


class Segment(NamedTuple):
    """One marker segment: ``data[start:end]`` is the whole segment (marker,
    length and payload); the payload is ``data[start + 4:end]``.  A standalone
    marker has no length: ``end == start + 2``."""

    marker: int
    start: int
    end: int


def segments(data: bytes) -> Iterator[Segment]:
    """The marker segments of ``data`` after SOI, in order, up to and including SOS.

    Stops (without raising) at the first thing that is not a well-formed
    segment: data that is not a JPEG yields nothing, a segment cut short or
    with a length below 2 ends the walk.  Fill bytes (``FF FF``) are skipped.
    """
    if not data.startswith(SOI):
        return
    pos, size = 2, len(data)
    while pos + 2 <= size and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE_MARKERS:
            yield Segment(marker, pos, pos + 2)
            pos += 2
            continue
        if pos + 4 > size:
            return
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2 or pos + 2 + length > size:
            return
        yield Segment(marker, pos, pos + 2 + length)
        if marker == SOS:
            return
        pos += 2 + length


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG's start-of-frame header, or None.

    None for data that is not a JPEG, is cut short before its SOF, has no SOF
    before SOS, or declares a zero size.
    """
    for segment in segments(data):
        if segment.marker in SOF_MARKERS:
            if segment.end - segment.start < 9:
                return None
            pos = segment.start
            height = (data[pos + 5] << 8) | data[pos + 6]
            width = (data[pos + 7] << 8) | data[pos + 8]
            return (width, height) if width and height else None
        if segment.marker == SOS:
            return None
    return None


def whole_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a JPEG that is whole as far as its ends tell: SOI
    first, EOI last, a SOF with the size before SOS (:func:`jpeg_size`); None
    for anything else, such as a JPEG cut short or with bytes after its end."""
    if not data.endswith(EOI):
        return None
    return jpeg_size(data)


def header_end(data: bytes) -> int:
    """The offset just after SOI and the APPn segments that follow it: where a
    COM segment may be inserted (2 for a JPEG without APPn segments)."""
    end = 2
    for segment in segments(data):
        if segment.marker not in APP_MARKERS:
            break
        end = segment.end
    return end


def insert_comment(data: bytes, text: bytes) -> bytes:
    """``data`` with a COM segment holding ``text`` (at most 65533 bytes) after its
    APPn headers; data that is not a JPEG is returned unchanged."""
    if not data.startswith(SOI):
        return data
    at = header_end(data)
    segment = b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text
    return b"".join((data[:at], segment, data[at:]))


def first_comment(data: bytes) -> tuple[bytes, int, int] | None:
    """The payload of the first COM segment found among the APPn headers, with
    the segment's start and end offsets; None if there is none there."""
    for segment in segments(data):
        if segment.marker == COM:
            return data[segment.start + 4 : segment.end], segment.start, segment.end
        if segment.marker not in APP_MARKERS:
            return None
    return None


def same_jpeg(a: bytes, b: bytes) -> bool:
    """Whether two frames are the same bytes: the length first (one comparison
    for almost every new frame), then the bytes."""
    return a is b or (len(a) == len(b) and a == b)
