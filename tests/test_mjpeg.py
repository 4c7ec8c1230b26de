"""The MJPEG stream through a real server on a loopback port, read over raw TCP."""

from __future__ import annotations

import asyncio
import io
import itertools
import time

import pytest
from PIL import Image

from handlers.mjpeg import img_part, length_part
from harness.colours import COLOURS, nearest_colour
from harness.multipart import FramingError, PartParser
from tests.fakes import FakeCamera
from tests.mjpeg_client import open_stream, read_parts


def decode(jpeg: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(jpeg))
    image.load()
    return image


async def wait_until(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.mark.alone  # every one of 30 frames a second read, none skipped
@pytest.mark.gen_test(timeout=20)
async def test_stream_headers_and_parts(port, feed):
    stream, response, parser = await open_stream(port)
    assert response.status == 200
    assert response.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
    assert "no-store" in response.headers["cache-control"]
    assert response.headers["pragma"] == "no-cache"
    assert "transfer-encoding" not in response.headers  # raw parts, not chunks
    parts = await read_parts(stream, parser, 12)
    stamps = []
    colours = []
    for part in parts:
        assert part.headers["content-type"] == "image/jpeg"
        assert int(part.headers["content-length"]) == len(part.body)
        image = decode(part.body)
        assert image.format == "JPEG" and image.size == (160, 120)
        colours.append(nearest_colour(image.getpixel((80, 60))))
        stamps.append(float(part.headers["x-timestamp"]))
    assert stamps == sorted(set(stamps)), "a frame was sent twice"
    assert abs(stamps[-1] - time.time()) < 5
    # The files camera cycles the colours in name order; each part is the next one.
    for a, b in itertools.pairwise(colours):
        assert b == (a + 1) % len(COLOURS)
    stream.close()


@pytest.mark.gen_test(timeout=20)
async def test_the_stream_starts_with_a_boundary(port):
    stream, _response, _parser = await open_stream(port)
    first = await stream.read_bytes(9)
    assert first == b"--frame\r\n"
    stream.close()


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize(
    "path",
    [
        "/stream.mjpg",
        "/stream.mjpg/",
        "/video_feed",
        "/stream",
        "/stream/",
        "/?action=stream",
        "/stream.mjpg?timestamp=1699999&_=42",
        "/?action=stream&1699999",
    ],
)
async def test_every_stream_url(port, path):
    stream, response, parser = await open_stream(port, path)
    assert response.status == 200
    assert response.headers["content-type"].startswith("multipart/x-mixed-replace")
    parts = await read_parts(stream, parser, 2)
    decode(parts[0].body)
    stream.close()


@pytest.mark.gen_test(timeout=20)
async def test_img_requests_get_the_next_boundary_right_after_each_frame(port):
    stream, response, _parser = await open_stream(port, headers={"Sec-Fetch-Dest": "image"})
    assert response.status == 200
    # Every JPEG is followed at once by the complete header block of the next part,
    # so a browser can paint it without waiting for the next frame.
    data = b""
    while data.count(b"\xff\xd9\r\n--frame\r\nContent-Type: image/jpeg\r\n\r\n") < 3:
        data += await stream.read_bytes(65536, partial=True)
    assert data.startswith(b"--frame\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8")
    parts = PartParser().feed(data)
    assert len(parts) >= 3
    for part in parts:
        assert "content-length" not in part.headers
        decode(part.body)
    stream.close()


@pytest.mark.gen_test(timeout=20)
async def test_framing_can_be_chosen_by_query(port):
    stream, _, _ = await open_stream(port, "/stream.mjpg?framing=img")
    data = await stream.read_bytes(200, partial=False)
    assert data.startswith(b"--frame\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8")
    stream.close()
    # An <img> that asks for Content-Length framing gets it.
    stream, _, parser = await open_stream(
        port, "/stream.mjpg?framing=length", headers={"Sec-Fetch-Dest": "image"}
    )
    parts = await read_parts(stream, parser, 2)
    assert all("content-length" in p.headers for p in parts)
    stream.close()


@pytest.mark.gen_test(timeout=20)
async def test_bad_framing_is_a_400(http_client, base_url):
    response = await http_client.fetch(base_url + "/stream.mjpg?framing=chunky", raise_error=False)
    assert response.code == 400
    assert b"framing must be one of" in response.body
    assert len(response.body) < 200


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize(
    ("dest", "expected"),
    [
        (None, "multipart/x-mixed-replace; boundary=frame"),
        ("image", "multipart/x-mixed-replace; boundary=frame"),
        # A script's fetch(): WebKit's cannot read a multipart/x-mixed-replace body.
        ("empty", "multipart/mixed; boundary=frame"),
    ],
)
async def test_the_stream_type_for_images_programs_and_scripts(http_client, base_url, feed, dest, expected):
    headers = {"Sec-Fetch-Dest": dest} if dest else {}
    response = await http_client.fetch(base_url + "/stream.mjpg", method="HEAD", headers=headers)
    assert response.headers["Content-Type"] == expected


@pytest.mark.gen_test(timeout=20)
async def test_head_sends_headers_only(http_client, base_url, feed):
    response = await http_client.fetch(base_url + "/stream.mjpg", method="HEAD")
    assert response.code == 200
    assert response.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
    assert response.headers.get("Content-Length") is None
    assert not feed.camera.running  # a HEAD does not start the camera


@pytest.mark.gen_test(timeout=30)
async def test_several_clients_at_once_each_get_every_frame_once(port, feed):
    clients = [await open_stream(port) for _ in range(5)]
    results = await asyncio.gather(*(read_parts(s, p, 10) for s, _r, p in clients))
    for parts in results:
        stamps = [float(p.headers["x-timestamp"]) for p in parts]
        assert stamps == sorted(set(stamps))
    assert feed.subscriber_count == 5
    for stream, _r, _p in clients:
        stream.close()
    await wait_until(lambda: feed.subscriber_count == 0)


@pytest.mark.gen_test(timeout=20)
async def test_a_client_closing_mid_frame_is_dropped_quietly(port, feed, caplog):
    stream, _, _ = await open_stream(port)
    await stream.read_bytes(100)  # in the middle of the first part
    stream.close()
    await wait_until(lambda: feed.subscriber_count == 0)
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


@pytest.mark.gen_test(timeout=20)
async def test_http10_clients_get_a_plain_stream(port):
    from tornado.tcpclient import TCPClient

    stream = await TCPClient().connect("127.0.0.1", port)
    await stream.write(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
    head = await stream.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n")
    parser = PartParser()
    parts = await read_parts(stream, parser, 2)
    decode(parts[1].body)
    stream.close()


def test_part_encoders():
    camera = FakeCamera()
    frame = camera.push(b"\xff\xd8JPEG\xff\xd9", timestamp=1700000000.25)
    part = length_part(frame)
    assert part == (
        b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 8\r\n"
        b"X-Timestamp: 1700000000.250000\r\n\r\n\xff\xd8JPEG\xff\xd9\r\n"
    )
    assert img_part(frame) == b"\xff\xd8JPEG\xff\xd9\r\n--frame\r\nContent-Type: image/jpeg\r\n\r\n"
    parser = PartParser()
    assert [p.body for p in parser.feed(part + part)] == [frame.jpeg, frame.jpeg]
    with pytest.raises(FramingError):
        PartParser().feed(b"--frame\r\nContent-Length: 3\r\n\r\nabcdXX")
