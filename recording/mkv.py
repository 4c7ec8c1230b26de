"""Matroska files of JPEG frames: written as they come, read back as an index.

A recording segment is a Matroska (``.mkv``) file with one video track of codec
``V_MJPEG``: every frame is the camera's JPEG, untouched, with its capture time
(millisecond resolution).  ffmpeg, ffprobe, VLC and mpv play such files, seek
in them and remux them.

The writer is built so that a crash loses little: the Segment starts with an
"unknown" size, and frames are written one Cluster (about a second of frames)
at a time, each complete before the next starts.  A file cut short after any
Cluster is a valid, playable Matroska file; :func:`recover` trims the partial
Cluster at its end and finishes the file.  Finishing (:meth:`MkvWriter.close`
and :func:`recover`) appends the Cues (a seek index), then overwrites three
placeholders near the start: the Segment's size, the SeekHead and the Duration.

:func:`read_index` reads where each frame's JPEG lies in the file, for the
browser player (which fetches frames by HTTP Range) and for the listing.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import random
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

# -- element IDs (with their length marker, as they appear in the file) -------
EBML = 0x1A45DFA3
SEGMENT = 0x18538067
SEEK_HEAD = 0x114D9B74
SEEK = 0x4DBB
SEEK_ID = 0x53AB
SEEK_POSITION = 0x53AC
INFO = 0x1549A966
TIMESTAMP_SCALE = 0x2AD7B1
DURATION = 0x4489
DATE_UTC = 0x4461
MUXING_APP = 0x4D80
WRITING_APP = 0x5741
TRACKS = 0x1654AE6B
TRACK_ENTRY = 0xAE
TRACK_NUMBER = 0xD7
TRACK_UID = 0x73C5
TRACK_TYPE = 0x83
FLAG_LACING = 0x9C
CODEC_ID = 0x86
DEFAULT_DURATION = 0x23E383
VIDEO = 0xE0
PIXEL_WIDTH = 0xB0
PIXEL_HEIGHT = 0xBA
CLUSTER = 0x1F43B675
TIMESTAMP = 0xE7
SIMPLE_BLOCK = 0xA3
BLOCK_GROUP = 0xA0
BLOCK = 0xA1
CUES = 0x1C53BB6B
CUE_POINT = 0xBB
CUE_TIME = 0xB3
CUE_TRACK_POSITIONS = 0xB7
CUE_TRACK = 0xF7
CUE_CLUSTER_POSITION = 0xF1
VOID = 0xEC

#: Every timestamp in the file is in milliseconds.
TIMESTAMP_SCALE_NS = 1_000_000
#: A Cluster closes after this much time (a crash loses at most about this much
#: of what was flushed), or when a block's 16-bit relative time would overflow.
CLUSTER_MS = 1000
CLUSTER_MAX_BYTES = 16 * 1024 * 1024
#: Bytes kept free after the Segment's start for the SeekHead written at the end.
SEEK_HEAD_SPACE = 96
#: Bytes kept free at the end of Info for the Duration written at the end.
DURATION_SPACE = 11
#: 2001-01-01T00:00:00Z, Matroska's epoch for DateUTC.
_MKV_EPOCH = 978307200
_UNKNOWN_SIZE_8 = b"\x01\xff\xff\xff\xff\xff\xff\xff"
_SEGMENT_SIZE_FIELD = 8


class MkvError(Exception):
    """A file that is not a readable recording; the message is for people."""


# -- encoding -------------------------------------------------------------------
def _id(element_id: int) -> bytes:
    return element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")


def _size(n: int) -> bytes:
    """``n`` as an EBML variable-size integer of the fewest bytes."""
    for length in range(1, 9):
        if n < (1 << (7 * length)) - 1:
            return ((1 << (7 * length)) | n).to_bytes(length, "big")
    raise ValueError(f"element too large: {n} bytes")


def _size8(n: int) -> bytes:
    """``n`` as an 8-byte EBML size (the form that can be overwritten in place)."""
    return ((1 << 56) | n).to_bytes(8, "big")


def _element(element_id: int, payload: bytes) -> bytes:
    return _id(element_id) + _size(len(payload)) + payload


def _uint(element_id: int, value: int) -> bytes:
    return _element(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def _float(element_id: int, value: float) -> bytes:
    return _id(element_id) + b"\x88" + struct.pack(">d", value)


def _string(element_id: int, value: str) -> bytes:
    return _element(element_id, value.encode("utf-8"))


def _void(total: int) -> bytes:
    """A Void element of exactly ``total`` bytes (2 to 16385)."""
    if total < 2:
        raise ValueError("a Void element takes at least 2 bytes")
    if total - 2 < 127:
        return bytes([VOID, 0x80 | (total - 2)]) + bytes(total - 2)
    return bytes([VOID]) + (0x4000 | (total - 3)).to_bytes(2, "big") + bytes(total - 3)


def _ebml_header() -> bytes:
    return _element(
        EBML,
        _uint(0x4286, 1)  # EBMLVersion
        + _uint(0x42F7, 1)  # EBMLReadVersion
        + _uint(0x42F2, 4)  # EBMLMaxIDLength
        + _uint(0x42F3, 8)  # EBMLMaxSizeLength
        + _string(0x4282, "matroska")  # DocType
        + _uint(0x4287, 4)  # DocTypeVersion
        + _uint(0x4285, 2),  # DocTypeReadVersion
    )


def _seek_head(positions: list[tuple[int, int]]) -> bytes:
    """SeekHead pointing at (element ID, position in the Segment), padded to SEEK_HEAD_SPACE."""
    seeks = b"".join(
        _element(SEEK, _element(SEEK_ID, _id(element_id)) + _element(SEEK_POSITION, pos.to_bytes(8, "big")))
        for element_id, pos in positions
    )
    head = _element(SEEK_HEAD, seeks)
    return head + _void(SEEK_HEAD_SPACE - len(head))


def _cues(clusters: list[tuple[int, int]]) -> bytes:
    points = b"".join(
        _element(
            CUE_POINT,
            _uint(CUE_TIME, t_ms)
            + _element(CUE_TRACK_POSITIONS, _uint(CUE_TRACK, 1) + _uint(CUE_CLUSTER_POSITION, pos)),
        )
        for t_ms, pos in clusters
    )
    return _element(CUES, points)


def _date_utc(unix_s: float) -> bytes:
    ns = round((unix_s - _MKV_EPOCH) * 1e9)
    return _id(DATE_UTC) + b"\x88" + ns.to_bytes(8, "big", signed=True)


# -- the writer -----------------------------------------------------------------
class MkvWriter:
    """Writes one Matroska file of JPEG frames, a Cluster at a time.

    ``add`` takes each frame's JPEG and its time in milliseconds from the
    file's start (non-decreasing; a time going back is clamped).  ``close``
    writes the last Cluster and finishes the file; ``sync`` makes what was
    written so far durable.  Not thread-safe: one thread writes a file.

    With ``exclusive`` the file is created, never replaced: a path that
    exists raises FileExistsError (the recorder's segments: a recording is
    never overwritten, whatever the clock says).  Other OSErrors (a full
    disk) are raised as they come.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        width: int,
        height: int,
        fps: float,
        start_time: float,
        exclusive: bool = False,
    ) -> None:
        self.path = Path(path)
        self.width = width
        self.height = height
        self.start_time = start_time
        self.frames = 0
        self.bytes_written = 0
        self.last_ms = -1
        self._interval_ms = 1000.0 / fps if fps > 0 else 0.0
        self._blocks: list[bytes] = []
        self._block_bytes = 0
        self._cluster_ms = 0
        self._clusters: list[tuple[int, int]] = []
        #: Clusters written to the file so far (the recorder syncs after new ones).
        self.clusters_written = 0
        self._file: BinaryIO | None = open(self.path, "xb" if exclusive else "wb")  # noqa: SIM115 (closed by close())
        try:
            self._write_head(fps)
        except BaseException:
            self._file.close()
            raise

    def _write_head(self, fps: float) -> None:
        f = self._file
        assert f is not None
        f.write(_ebml_header())
        f.write(_id(SEGMENT) + _UNKNOWN_SIZE_8)
        self._segment_start = f.tell()
        f.write(_void(SEEK_HEAD_SPACE))
        self._info_pos = f.tell() - self._segment_start
        info = (
            _uint(TIMESTAMP_SCALE, TIMESTAMP_SCALE_NS)
            + _string(MUXING_APP, "camstream")
            + _string(WRITING_APP, "camstream")
            + _date_utc(self.start_time)
        )
        info_head = _id(INFO) + _size(len(info) + DURATION_SPACE)
        self._duration_at = f.tell() + len(info_head) + len(info)
        f.write(info_head + info + _void(DURATION_SPACE))
        self._tracks_pos = f.tell() - self._segment_start
        video = _uint(PIXEL_WIDTH, self.width) + _uint(PIXEL_HEIGHT, self.height)
        entry = (
            _uint(TRACK_NUMBER, 1)
            + _uint(TRACK_UID, random.getrandbits(63) | 1)
            + _uint(TRACK_TYPE, 1)  # video
            + _uint(FLAG_LACING, 0)
            + _string(CODEC_ID, "V_MJPEG")
        )
        if self._interval_ms:
            entry += _uint(DEFAULT_DURATION, round(self._interval_ms * 1e6))
        f.write(_element(TRACKS, _element(TRACK_ENTRY, entry + _element(VIDEO, video))))
        f.flush()
        self.bytes_written = f.tell()

    def add(self, jpeg: bytes, t_ms: int) -> None:
        """Append one frame at ``t_ms`` milliseconds from the start of the file."""
        if self._file is None:
            raise ValueError("the file is closed")
        t_ms = max(int(t_ms), self.last_ms, 0)
        if self._blocks and (
            t_ms - self._cluster_ms >= CLUSTER_MS
            or t_ms - self._cluster_ms > 32767
            or self._block_bytes >= CLUSTER_MAX_BYTES
        ):
            self.flush_cluster()
        if not self._blocks:
            self._cluster_ms = t_ms
        head = b"\x81" + (t_ms - self._cluster_ms).to_bytes(2, "big", signed=True) + b"\x80"
        block = _id(SIMPLE_BLOCK) + _size(len(head) + len(jpeg)) + head
        self._blocks.append(block)
        self._blocks.append(jpeg)
        self._block_bytes += len(block) + len(jpeg)
        self.frames += 1
        self.last_ms = t_ms

    def flush_cluster(self) -> None:
        """Write the frames added since the last Cluster as one complete Cluster."""
        f = self._file
        if f is None or not self._blocks:
            return
        timestamp = _uint(TIMESTAMP, self._cluster_ms)
        payload_size = len(timestamp) + self._block_bytes
        position = f.tell() - self._segment_start
        f.write(_id(CLUSTER) + _size8(payload_size) + timestamp)
        f.writelines(self._blocks)
        f.flush()
        self._clusters.append((self._cluster_ms, position))
        self.clusters_written += 1
        self._blocks = []
        self._block_bytes = 0
        self.bytes_written = f.tell()

    def sync(self) -> None:
        """Make every complete Cluster durable (``fdatasync``)."""
        if self._file is not None:
            self._file.flush()
            os.fdatasync(self._file.fileno())

    @property
    def duration_ms(self) -> float:
        """From the start to the end of the last frame (one frame interval after it)."""
        if self.last_ms < 0:
            return 0.0
        return self.last_ms + (self._interval_ms or 0.0)

    def close(self) -> None:
        """Write the last Cluster, finish the file (Cues, sizes, Duration) and sync it."""
        f = self._file
        if f is None:
            return
        try:
            self.flush_cluster()
            _finish(
                f,
                segment_start=self._segment_start,
                info_pos=self._info_pos,
                tracks_pos=self._tracks_pos,
                duration_at=self._duration_at,
                duration_ms=self.duration_ms,
                clusters=self._clusters,
            )
            self.bytes_written = f.seek(0, os.SEEK_END)
        finally:
            self._file = None
            f.close()

    def abandon(self) -> None:
        """Close the file as it stands (after a write error): :func:`recover` finishes it later."""
        f, self._file = self._file, None
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()


def _finish(
    f: BinaryIO,
    *,
    segment_start: int,
    info_pos: int,
    tracks_pos: int,
    duration_at: int | None,
    duration_ms: float,
    clusters: list[tuple[int, int]],
) -> None:
    """Append Cues, then fill in the Segment's size, the SeekHead and the Duration."""
    end = f.seek(0, os.SEEK_END)
    positions = [(INFO, info_pos), (TRACKS, tracks_pos)]
    if clusters:
        f.write(_cues(clusters))
        positions.append((CUES, end - segment_start))
        end = f.tell()
    f.flush()
    os.fsync(f.fileno())  # the frames and Cues are on disk before the header says so
    f.seek(segment_start - _SEGMENT_SIZE_FIELD)
    f.write(_size8(end - segment_start))
    f.write(_seek_head(positions))
    if duration_at is not None:
        f.seek(duration_at)
        f.write(_float(DURATION, float(duration_ms)))
    f.flush()
    os.fsync(f.fileno())


# -- reading --------------------------------------------------------------------
@dataclass
class SegmentIndex:
    """What a recording holds and where each frame's JPEG lies in the file."""

    width: int = 0
    height: int = 0
    #: Unix time of the file's zero (DateUTC), or None.
    start_time: float | None = None
    #: As written in the file (None for a file still being written).
    duration_ms: float | None = None
    #: Each frame as (time in ms, offset of its JPEG in the file, JPEG length).
    frames: list[tuple[int, int, int]] = field(default_factory=list)
    #: True when the Segment's size is known (a finished file).
    finished: bool = False
    #: Where the last complete Cluster ends (what :func:`recover` keeps).
    complete_end: int = 0
    # Positions that finishing the file needs.
    segment_start: int = 0
    info_pos: int = -1
    tracks_pos: int = -1
    duration_at: int | None = None
    clusters: list[tuple[int, int]] = field(default_factory=list)

    @property
    def frame_count(self) -> int:
        return len(self.frames)

    def length_ms(self) -> float:
        """The Duration if the file has one, else up to the last frame plus one interval."""
        if self.duration_ms:
            return self.duration_ms
        if not self.frames:
            return 0.0
        if len(self.frames) > 1:
            step = (self.frames[-1][0] - self.frames[0][0]) / (len(self.frames) - 1)
        else:
            step = 0.0
        return self.frames[-1][0] + step


class _Reader:
    """EBML element headers read from a byte buffer (an mmap)."""

    def __init__(self, data: mmap.mmap | bytes) -> None:
        self.data = data
        self.size = len(data)

    def vint(self, pos: int, keep_marker: bool) -> tuple[int, int, bool]:
        """(value, length, all-ones) of the variable-size integer at ``pos``."""
        if pos >= self.size:
            raise EOFError
        first = self.data[pos]
        if first == 0:
            raise MkvError("not a Matroska element (bad length byte)")
        length = 9 - first.bit_length()
        if pos + length > self.size:
            raise EOFError
        value = int.from_bytes(self.data[pos : pos + length], "big")
        if keep_marker:
            return value, length, False
        value &= (1 << (7 * length)) - 1
        return value, length, value == (1 << (7 * length)) - 1

    def header(self, pos: int) -> tuple[int, int, int | None]:
        """(element ID, position of its payload, payload size or None if unknown)."""
        element_id, id_len, _ = self.vint(pos, keep_marker=True)
        if id_len > 4:
            raise MkvError("not a Matroska element (ID too long)")
        size, size_len, unknown = self.vint(pos + id_len, keep_marker=False)
        return element_id, pos + id_len + size_len, None if unknown else size

    def uint(self, start: int, size: int) -> int:
        return int.from_bytes(self.data[start : start + size], "big")

    def children(self, start: int, end: int):
        """Each (ID, payload start, payload size) inside [start, end); sizes must be known."""
        pos = start
        while pos < end:
            element_id, payload, size = self.header(pos)
            if size is None or payload + size > end:
                raise EOFError
            yield element_id, payload, size
            pos = payload + size


def read_index(path: str | os.PathLike[str], *, frames: bool = True) -> SegmentIndex:
    """Read a recording's frames (their times and where their JPEGs lie);
    with ``frames=False`` only its headers (size, start, Duration), which is quick.

    A file cut short (still being written, or left by a crash) is read up to
    its last complete Cluster.  Raises MkvError for anything else that is not
    a Matroska file of one JPEG track, OSError if it cannot be read.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise MkvError("empty file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            try:
                return _parse(_Reader(data), frames)
            except (EOFError, IndexError) as exc:
                raise MkvError("not a complete Matroska header") from exc


def _parse(r: _Reader, frames: bool = True) -> SegmentIndex:
    element_id, payload, size = r.header(0)
    if element_id != EBML or size is None:
        raise MkvError("not a Matroska file")
    doc_type = b""
    for child, start, length in r.children(payload, payload + size):
        if child == 0x4282:
            doc_type = bytes(r.data[start : start + length]).rstrip(b"\0")
    if doc_type not in (b"matroska", b"webm"):
        raise MkvError(f"not a Matroska file (DocType {doc_type!r})")
    pos = payload + size
    element_id, seg_start, seg_size = r.header(pos)
    if element_id != SEGMENT:
        raise MkvError("no Segment in the file")
    index = SegmentIndex(segment_start=seg_start, finished=seg_size is not None)
    seg_end = r.size if seg_size is None else min(r.size, seg_start + seg_size)
    scale = TIMESTAMP_SCALE_NS
    track = None
    pos = seg_start
    index.complete_end = seg_start
    while pos < seg_end:
        try:
            element_id, start, length = r.header(pos)
        except EOFError:
            break
        if length is None or start + length > seg_end:
            break  # an unfinished element at the end of a file cut short
        end = start + length
        if element_id == INFO:
            index.info_pos = pos - seg_start
            for child, cstart, clen in r.children(start, end):
                if child == TIMESTAMP_SCALE:
                    scale = r.uint(cstart, clen) or TIMESTAMP_SCALE_NS
                elif child == DURATION and clen in (4, 8):
                    fmt = ">d" if clen == 8 else ">f"
                    index.duration_ms = struct.unpack(fmt, r.data[cstart : cstart + clen])[0]
                elif child == DATE_UTC and clen == 8:
                    ns = int.from_bytes(r.data[cstart : cstart + 8], "big", signed=True)
                    index.start_time = _MKV_EPOCH + ns / 1e9
                elif child == VOID and clen == DURATION_SPACE - 2:
                    index.duration_at = cstart - 2
        elif element_id == TRACKS:
            index.tracks_pos = pos - seg_start
            track = _video_track(r, start, end, index)
        elif element_id == CLUSTER:
            if not frames:
                break
            if track is None:
                raise MkvError("a Cluster before the Tracks")
            index.clusters.append(_cluster(r, start, end, track, pos - seg_start, index.frames))
        index.complete_end = end
        pos = end
    if track is None:
        raise MkvError("no video track of JPEG frames (V_MJPEG)")
    if scale != TIMESTAMP_SCALE_NS:
        factor = scale / TIMESTAMP_SCALE_NS
        index.frames = [(round(t * factor), off, n) for t, off, n in index.frames]
        if index.duration_ms is not None:
            index.duration_ms *= factor
    if index.duration_ms is not None and not index.finished:
        index.duration_ms = None
    return index


def _video_track(r: _Reader, start: int, end: int, index: SegmentIndex) -> int:
    for child, cstart, clen in r.children(start, end):
        if child != TRACK_ENTRY:
            continue
        number, codec = 0, b""
        for item, istart, ilen in r.children(cstart, cstart + clen):
            if item == TRACK_NUMBER:
                number = r.uint(istart, ilen)
            elif item == CODEC_ID:
                codec = bytes(r.data[istart : istart + ilen]).rstrip(b"\0")
            elif item == VIDEO:
                for v, vstart, vlen in r.children(istart, istart + ilen):
                    if v == PIXEL_WIDTH:
                        index.width = r.uint(vstart, vlen)
                    elif v == PIXEL_HEIGHT:
                        index.height = r.uint(vstart, vlen)
        if codec == b"V_MJPEG" and number:
            return number
    raise MkvError("no video track of JPEG frames (V_MJPEG)")


def _cluster(
    r: _Reader, start: int, end: int, track: int, position: int, frames: list[tuple[int, int, int]]
) -> tuple[int, int]:
    cluster_ms = 0
    for child, cstart, clen in r.children(start, end):
        if child == TIMESTAMP:
            cluster_ms = r.uint(cstart, clen)
        elif child in (SIMPLE_BLOCK, BLOCK_GROUP):
            if child == BLOCK_GROUP:
                blocks = [(b, s, n) for b, s, n in r.children(cstart, cstart + clen) if b == BLOCK]
                if not blocks:
                    continue
                _, cstart, clen = blocks[0]
            number, nlen, _ = r.vint(cstart, keep_marker=False)
            if number != track or clen < nlen + 3:
                continue
            head = cstart + nlen
            relative = int.from_bytes(r.data[head : head + 2], "big", signed=True)
            if r.data[head + 2] & 0x06:
                raise MkvError("laced blocks are not supported")
            frames.append((cluster_ms + relative, head + 3, clen - nlen - 3))
    return cluster_ms, position


def recover(path: str | os.PathLike[str]) -> SegmentIndex:
    """Finish a file that was being written when the process died.

    Cuts what follows the last complete Cluster, then writes the Cues, the
    sizes and the Duration as :meth:`MkvWriter.close` would have.  Returns the
    index of the finished file.  Raises MkvError if nothing can be kept.
    """
    index = read_index(path)
    if index.finished:
        return index
    if not index.frames:
        raise MkvError("no complete frame in the file")
    with open(path, "r+b") as f:
        f.truncate(index.complete_end)
        _finish(
            f,
            segment_start=index.segment_start,
            info_pos=index.info_pos,
            tracks_pos=index.tracks_pos,
            duration_at=index.duration_at,
            duration_ms=index.length_ms(),
            clusters=index.clusters,
        )
    return read_index(path)


def format_start(unix_s: float) -> str:
    """The name of a segment starting at ``unix_s``: ``20261121T213000Z``."""
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y%m%dT%H%M%SZ")
