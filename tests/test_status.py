"""``/status``: what the camera and its viewers are doing, as JSON."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.mjpeg_client import open_stream, read_parts


async def status(http_client, base_url) -> dict:
    response = await http_client.fetch(base_url + "/status")
    assert response.headers["Content-Type"] == "application/json"
    return json.loads(response.body)


@pytest.mark.gen_test(timeout=20)
async def test_status_of_a_stopped_camera(http_client, base_url):
    body = await status(http_client, base_url)
    assert body["driver"] == "files"
    assert body["running"] is False
    assert body["online"] is False
    assert body["fps_configured"] == 30
    assert body["fps_measured"] == 0
    assert (body["width"], body["height"]) == (640, 480)  # configured until a frame says otherwise
    assert body["subscribers"] == 0
    assert body["frames_sent"] == 0
    assert body["frames_skipped"] == 0
    assert body["version"]


@pytest.mark.gen_test(timeout=30)
async def test_status_while_streaming(http_client, base_url, port):
    stream, _, parser = await open_stream(port)
    await read_parts(stream, parser, 3)
    deadline = time.monotonic() + 10
    while True:  # the measured rate needs a second of frames
        body = await status(http_client, base_url)
        if body["fps_measured"] > 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert body["running"] is True and body["online"] is True
    assert body["subscribers"] == 1
    assert body["frames_sent"] >= 3
    assert (body["width"], body["height"]) == (160, 120)
    assert 20 < body["fps_measured"] < 40
    assert body["last_frame_age_s"] < 1
    stream.close()


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize("path", ["/status", "/status/", "/status?x=1"])
async def test_status_urls_and_head(http_client, base_url, path):
    response = await http_client.fetch(base_url + path)
    json.loads(response.body)
    response = await http_client.fetch(base_url + path, method="HEAD")
    assert response.code == 200 and response.body == b""
