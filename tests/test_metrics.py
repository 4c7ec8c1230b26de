"""``/metrics``: the Prometheus text format, read back with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import time

import pytest
import tornado.websocket
from prometheus_client.parser import text_string_to_metric_families

from tests.mjpeg_client import open_stream, read_parts


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def scrape(http_client, base_url) -> dict:
    response = await http_client.fetch(base_url + "/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return samples(response.body.decode())


@pytest.mark.gen_test(timeout=30)
async def test_metrics_follow_the_viewers_and_frames(http_client, base_url, port):
    cam = (("camera", "files"),)
    idle = await scrape(http_client, base_url)
    assert idle[("camstream_viewers", (("camera", "files"), ("kind", "mjpeg")))] == 0
    assert idle[("camstream_frames_sent_total", cam)] == 0
    assert idle[("camstream_camera_running", cam)] == 0
    assert ("process_resident_memory_bytes", ()) in idle  # the library's process metrics

    stream, _head, parser = await open_stream(port)
    ws = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/ws")
    await read_parts(stream, parser, 5)
    deadline = time.monotonic() + 10
    while True:
        now = await scrape(http_client, base_url)
        if (
            now[("camstream_viewers", (("camera", "files"), ("kind", "ws")))] == 1
            or time.monotonic() > deadline
        ):
            break
        await asyncio.sleep(0.02)
    assert now[("camstream_viewers", (("camera", "files"), ("kind", "mjpeg")))] == 1
    assert now[("camstream_viewers", (("camera", "files"), ("kind", "ws")))] == 1
    assert now[("camstream_frames_captured_total", cam)] >= 5
    assert now[("camstream_frames_sent_total", cam)] >= 5
    assert now[("camstream_bytes_sent_total", cam)] > 5 * 500
    assert now[("camstream_camera_starts_total", cam)] == 1
    assert now[("camstream_camera_failures_total", cam)] == 0
    assert now[("camstream_camera_online", cam)] == 1
    stream.close()
    ws.close()


@pytest.mark.gen_test(timeout=30)
async def test_metrics_head_and_slash(http_client, base_url):
    head = await http_client.fetch(base_url + "/metrics/", method="HEAD")
    assert head.code == 200 and head.body == b""
