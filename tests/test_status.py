"""``/status``: what the camera and its viewers are doing, as JSON."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import tornado.websocket
from prometheus_client.parser import text_string_to_metric_families

from recording.recorder import Recorder, RecordSettings
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


@pytest.mark.alone  # the camera's measured rate: 20 to 40 of its 30 fps
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


@pytest.mark.gen_test(timeout=30)
async def test_frames_held_back_by_a_rate_cap_are_not_counted_as_sent(http_client, base_url, port):
    """One meaning per counter: a WebSocket capped at 5 fps of a 30 fps camera
    receives what ``frames_sent`` + ``frames_repeated`` say, the rest is
    ``frames_capped`` (the old counters said 126 sent for 22 received)."""
    ws = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/ws")
    await ws.write_message(json.dumps({"fps": 5}))
    received = 0
    replied = False
    loop = asyncio.get_running_loop()
    until = loop.time() + 2.0
    while loop.time() < until:
        message = await asyncio.wait_for(ws.read_message(), 5)
        assert message is not None
        if isinstance(message, bytes):
            received += 1
        elif json.loads(message)["type"] == "reply":
            replied = True
    ws.close()
    body = await status(http_client, base_url)
    assert replied
    assert 5 <= received <= 14  # about 5 a second for 2 s
    # Sent means written to this client; at most one more may have been on its way.
    assert received <= body["frames_sent"] + body["frames_repeated"] <= received + 1
    assert body["frames_capped"] >= 30  # the other ~25 frames a second were held back
    assert body["bytes_sent"] > 0


@pytest.mark.gen_test(timeout=20)
async def test_status_and_metrics_name_each_counter_alike(http_client, base_url, tmp_path):
    await http_client.fetch(base_url + "/snapshot.jpg?width=16")  # a variant, with its counters
    body = await status(http_client, base_url)
    (variant,) = body["variants"]["sizes"].values()
    # A recording camera's counters are in its "recording" object.
    recording = Recorder("files", RecordSettings(str(tmp_path))).status()
    response = await http_client.fetch(base_url + "/metrics")
    names = {
        family.name.removeprefix("camstream_")
        for family in text_string_to_metric_families(response.body.decode())
        if family.type == "counter" and family.name.startswith("camstream_")
    }
    assert names  # prometheus_client gives counter families without "_total"
    fields = set(body) | set(recording) | set(body["variants"]) | set(variant)
    assert names <= fields, f"in /metrics but not in /status: {sorted(names - fields)}"
    for key in ("frames_captured", "frames_capped", "viewers_stalled", "camera_failures", "frames_encoded"):
        assert key in names
    assert "stalled_dropped" not in body
