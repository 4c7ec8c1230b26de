"""The kiosks' heartbeats (handlers/kiosks.py): the registry against a hand-turned clock,
and the protocol against the real application on a loopback port: heartbeats on a plain
WebSocket client (tornado.websocket) and ``POST heartbeat`` beacons, what ``/status`` and
``/metrics`` make of them, and every malformed case."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
import tornado.websocket
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import HTTPClientError, HTTPRequest

from handlers.kiosks import GONE_KEEP_S, MAX_BEACON_BYTES, Heartbeat, Kiosks
from handlers.ws import MAX_CLIENT_MESSAGE_BYTES


class Clocks:
    """A monotonic and a wall clock that move only when told."""

    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = 1_700_000_000.0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def registry(clocks: Clocks) -> Kiosks:
    return Kiosks(monotonic=lambda: clocks.mono, wall=lambda: clocks.wall, max_kiosks=4)


def beat(ident: str | None = "k1", frames: int | None = 0, interval_s: float = 5.0) -> Heartbeat:
    return Heartbeat(id=ident, page="/kiosk", frames_shown=frames, interval_s=interval_s)


def by_id(registry: Kiosks) -> dict[str, dict]:
    return {k["id"]: k for k in registry.status()}


# -- the registry, by hand ----------------------------------------------------------
def test_a_socket_kiosk_is_live_then_silent_then_gone_at_its_close(registry, clocks):
    token = registry.connection_token()
    registry.heartbeat(beat(frames=10), camera="cam", address="192.0.2.1", transport="ws", connection=token)
    kiosk = by_id(registry)["k1"]
    assert kiosk["state"] == "live" and kiosk["connections"] == 1 and kiosk["heartbeats"] == 1
    assert kiosk["last_heartbeat_at"] == "2023-11-14T22:13:20.000Z"
    clocks.advance(5)
    registry.heartbeat(beat(frames=160), camera="cam", address="192.0.2.1", transport="ws", connection=token)
    kiosk = by_id(registry)["k1"]
    assert kiosk["frames_per_s"] == 30.0 and kiosk["frames_shown"] == 160 and kiosk["heartbeats"] == 2
    clocks.advance(15)  # three intervals: still live, just
    assert by_id(registry)["k1"]["state"] == "live"
    clocks.advance(0.5)  # open, but no heartbeat for over three intervals: a hung page
    kiosk = by_id(registry)["k1"]
    assert kiosk["state"] == "silent" and kiosk["last_heartbeat_age_s"] == 15.5
    assert registry.counts() == {"live": 0, "silent": 1, "gone": 0}
    assert registry.oldest_heartbeat_age_s() == 15.5
    registry.disconnected("k1", token)
    kiosk = by_id(registry)["k1"]
    assert kiosk["state"] == "gone" and kiosk["gone_for_s"] == 0
    assert registry.oldest_heartbeat_age_s() is None


def test_a_reconnected_kiosk_keeps_its_entry_and_the_old_sockets_close_does_not_end_it(registry, clocks):
    old, new = registry.connection_token(), registry.connection_token()
    registry.heartbeat(beat(), camera="cam", address="a", transport="ws", connection=old)
    clocks.advance(1)
    registry.heartbeat(beat(), camera="cam", address="a", transport="ws", connection=new)
    registry.disconnected("k1", old)  # the dead link's socket, closed late by the pings
    kiosk = by_id(registry)["k1"]
    assert kiosk["state"] == "live" and kiosk["connections"] == 2
    registry.disconnected("k1", new)
    assert by_id(registry)["k1"]["state"] == "gone"


def test_a_beacon_kiosk_is_gone_after_three_intervals_and_forgotten_later(registry, clocks):
    registry.heartbeat(beat(interval_s=2), camera="cam", address="a", transport="http")
    clocks.advance(6)
    assert by_id(registry)["k1"]["state"] == "live"
    clocks.advance(0.1)
    kiosk = by_id(registry)["k1"]
    assert kiosk["state"] == "gone" and kiosk["transport"] == "http"
    clocks.advance(GONE_KEEP_S - 0.2)  # gone since 6 s after its last heartbeat
    assert by_id(registry)["k1"]["gone_for_s"] == GONE_KEEP_S - 0.1, "a gone kiosk is shown for a few minutes"
    clocks.advance(0.2)
    assert registry.status() == [], "and then forgotten"


def test_at_most_max_kiosks_are_remembered_the_gone_ones_forgotten_first(registry, clocks):
    tokens = {}
    for n in range(4):
        tokens[n] = registry.connection_token()
        registry.heartbeat(beat(f"k{n}"), camera="cam", address="a", transport="ws", connection=tokens[n])
        clocks.advance(1)
    registry.disconnected("k2", tokens[2])
    registry.heartbeat(beat("k4"), camera="cam", address="a", transport="ws", connection=99)
    assert list(by_id(registry)) == ["k0", "k1", "k3", "k4"], "the gone one made room"
    # None gone: the one heard from longest ago makes room.
    registry.heartbeat(beat("k5"), camera="cam", address="a", transport="ws", connection=100)
    assert list(by_id(registry)) == ["k1", "k3", "k4", "k5"]
    assert registry.forgotten == 2
    # A flood of new ids never grows it.
    for n in range(1000):
        registry.heartbeat(beat(f"f{n}"), camera="cam", address="a", transport="http")
    assert len(registry.status()) == 4


def test_status_of_one_camera_lists_its_kiosks_only(registry):
    registry.heartbeat(beat("a"), camera="garage", address="x", transport="http")
    registry.heartbeat(beat("b"), camera="porch", address="x", transport="http")
    assert [k["id"] for k in registry.status("porch")] == ["b"]
    assert [k["id"] for k in registry.status()] == ["a", "b"]


# -- the real application: heartbeats on the WebSocket --------------------------------
async def connect(port: int, path: str = "/ws"):
    request = HTTPRequest(f"ws://127.0.0.1:{port}{path}", request_timeout=5)
    return await asyncio.wait_for(tornado.websocket.websocket_connect(request), 5)


async def read(ws, timeout_s: float = 5.0):
    return await asyncio.wait_for(ws.read_message(), timeout_s)


async def reply(ws) -> dict:
    """The next reply (frames and the hello on the way are passed over)."""
    while True:
        message = await read(ws)
        assert message is not None, "the socket closed"
        if isinstance(message, str) and json.loads(message)["type"] == "reply":
            return json.loads(message)


async def frames(ws, count: int) -> None:
    got = 0
    while got < count:
        message = await read(ws)
        assert message is not None, "the socket closed"
        got += isinstance(message, bytes)


async def status(http_client, base_url: str, path: str = "/status") -> dict:
    return json.loads((await http_client.fetch(base_url + path)).body)


async def wait_for(predicate, timeout_s: float, what: str) -> None:
    """Await ``predicate()`` (a coroutine function) until true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout_s} s"
        await asyncio.sleep(0.05)  # polling, with a deadline


HEARTBEAT = {
    "type": "heartbeat",
    "id": "kiosk-1",
    "page": "/kiosk",
    "frames_shown": 42,
    "interval_s": 5,
    "viewport": [1280, 720],
    "screen": [1920, 1080],
    "pixel_ratio": 1.5,
    "page_uptime_s": 12.5,
    "reconnects": 1,
    "stalls": 0,
}


@pytest.mark.gen_test(timeout=30)
async def test_a_heartbeat_is_recorded_shown_in_status_and_gone_at_the_close(port, http_client, base_url):
    ws = await connect(port)
    await ws.write_message(json.dumps({**HEARTBEAT, "time": 7}))
    answer = await reply(ws)
    assert answer["heartbeat"] == "recorded" and answer["time"] == 7
    (kiosk,) = (await status(http_client, base_url))["kiosks"]
    assert kiosk["id"] == "kiosk-1" and kiosk["state"] == "live" and kiosk["camera"] == "files"
    assert kiosk["address"] == "127.0.0.1" and kiosk["transport"] == "ws" and kiosk["page"] == "/kiosk"
    assert (
        kiosk["frames_shown"] == 42 and kiosk["viewport"] == [1280, 720] and kiosk["screen"] == [1920, 1080]
    )
    assert kiosk["pixel_ratio"] == 1.5 and kiosk["reconnects"] == 1 and kiosk["page_uptime_s"] == 12.5
    assert 0 <= kiosk["last_heartbeat_age_s"] < 5
    # The camera's own /status lists it too.
    assert [k["id"] for k in (await status(http_client, base_url, "/cameras/files/status"))["kiosks"]] == [
        "kiosk-1"
    ]
    await ws.write_message(json.dumps({**HEARTBEAT, "frames_shown": 43}))
    assert (await reply(ws))["heartbeat"] == "recorded"
    (kiosk,) = (await status(http_client, base_url))["kiosks"]
    assert kiosk["heartbeats"] == 2 and kiosk["frames_shown"] == 43 and kiosk["connections"] == 1
    ws.close()

    async def gone() -> bool:
        return (await status(http_client, base_url))["kiosks"][0]["state"] == "gone"

    await wait_for(gone, 5, "the closed kiosk marked gone")


@pytest.mark.gen_test(timeout=30)
async def test_an_open_socket_without_heartbeats_is_silent(port, http_client, base_url):
    ws = await connect(port)
    await ws.write_message(json.dumps({**HEARTBEAT, "interval_s": 1}))
    await reply(ws)

    async def silent() -> bool:
        return (await status(http_client, base_url))["kiosks"][0]["state"] == "silent"

    await wait_for(silent, 10, "a kiosk quiet for three intervals marked silent")
    await frames(ws, 2)  # the socket itself is open and streaming
    await ws.write_message(json.dumps({**HEARTBEAT, "interval_s": 1}))
    await reply(ws)
    assert (await status(http_client, base_url))["kiosks"][0]["state"] == "live"
    ws.close()


@pytest.mark.gen_test(timeout=30)
async def test_metrics_count_kiosks_and_the_oldest_heartbeat(port, http_client, base_url):
    def scrape(text: str) -> dict:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    before = scrape((await http_client.fetch(base_url + "/metrics")).body.decode())
    assert before[("camstream_kiosks", (("state", "live"),))] == 0
    assert ("camstream_kiosk_oldest_heartbeat_age_seconds", ()) not in before
    ws = await connect(port)
    await ws.write_message(json.dumps(HEARTBEAT))
    await reply(ws)
    after = scrape((await http_client.fetch(base_url + "/metrics")).body.decode())
    assert after[("camstream_kiosks", (("state", "live"),))] == 1
    assert after[("camstream_kiosks", (("state", "gone"),))] == 0
    assert 0 <= after[("camstream_kiosk_oldest_heartbeat_age_seconds", ())] < 5
    ws.close()


BAD_FIELDS = [
    ({"id": "has space"}, "id must be"),
    ({"id": "x" * 65}, "id must be"),
    ({"id": 5}, "id must be"),
    ({"page": 7}, "page must be"),
    ({"page": "/kiosk\n"}, "page must be"),
    ({"page": ""}, "page must be"),
    ({"page": "/" * 300}, "page must be"),
    ({"frames_shown": -1}, "frames_shown must be"),
    ({"frames_shown": 1.5}, "frames_shown must be"),
    ({"frames_shown": "12"}, "frames_shown must be"),
    ({"frames_shown": True}, "frames_shown must be"),
    ({"frames_shown": 2**60}, "frames_shown must be"),
    ({"interval_s": 0}, "interval_s must be"),
    ({"interval_s": 600}, "interval_s must be"),
    ({"interval_s": "5"}, "interval_s must be"),
    ({"viewport": [1280]}, "viewport must be"),
    ({"viewport": "1280x720"}, "viewport must be"),
    ({"viewport": [1280, -1]}, "viewport must be"),
    ({"screen": [1e9, 1]}, "screen must be"),
    ({"pixel_ratio": 0}, "pixel_ratio must be"),
    ({"pixel_ratio": 1e6}, "pixel_ratio must be"),
    ({"page_uptime_s": -3}, "page_uptime_s must be"),
    ({"reconnects": [1]}, "reconnects must be"),
    ({"stalls": None, "reconnects": {}}, "reconnects must be"),
]


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(("fields", "rule"), BAD_FIELDS)
async def test_a_malformed_heartbeat_is_ignored_and_the_picture_goes_on(
    port, http_client, base_url, caplog, fields, rule
):
    ws = await connect(port)
    await ws.write_message(json.dumps({**HEARTBEAT, **fields, "time": 1}))
    answer = await reply(ws)
    assert answer["heartbeat"].startswith("ignored: ") and rule in answer["heartbeat"]
    assert answer["time"] == 1, "the rest of the message is still answered"
    await ws.write_message(json.dumps({**HEARTBEAT, **fields}))
    await reply(ws)
    await frames(ws, 3)  # not closed: a kiosk's picture does not depend on its monitoring
    assert (await status(http_client, base_url))["kiosks"] == [], "nothing recorded"
    lines = [r for r in caplog.records if "heartbeat ignored" in r.getMessage()]
    assert len(lines) == 1, "one log line per socket, however often it beats"
    assert rule in lines[0].getMessage() and lines[0].levelno == logging.INFO
    assert "Traceback" not in caplog.text
    ws.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_sockets_kiosk_id_may_not_change(port, http_client, base_url):
    ws = await connect(port)
    await ws.write_message(json.dumps(HEARTBEAT))
    assert (await reply(ws))["heartbeat"] == "recorded"
    await ws.write_message(json.dumps({**HEARTBEAT, "id": "another"}))
    assert "may not change" in (await reply(ws))["heartbeat"]
    await ws.write_message(json.dumps({"type": "heartbeat", "frames_shown": 50}))  # no id: the socket's
    assert (await reply(ws))["heartbeat"] == "recorded"
    (kiosk,) = (await status(http_client, base_url))["kiosks"]
    assert kiosk["id"] == "kiosk-1" and kiosk["frames_shown"] == 50
    ws.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_heartbeat_without_an_id_is_the_sockets_own(port, http_client, base_url):
    ws = await connect(port)
    await ws.write_message(json.dumps({"type": "heartbeat"}))
    assert (await reply(ws))["heartbeat"] == "recorded"
    (kiosk,) = (await status(http_client, base_url))["kiosks"]
    assert kiosk["id"].startswith("ws-") and kiosk["frames_shown"] is None and kiosk["page"] is None
    # Another type, or none, is no heartbeat.
    await ws.write_message(json.dumps({"type": "other", "frames_shown": -5}))
    assert "heartbeat" not in await reply(ws)
    ws.close()


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(
    ("message", "code"),
    [
        ('{"type": "heartbeat", "id": ', 1007),
        ('["heartbeat"]', 1008),
        ('{"type": "heartbeat", "time": "now"}', 1008),
        (json.dumps({**HEARTBEAT, "page": "/" + "x" * MAX_CLIENT_MESSAGE_BYTES}), 1009),
    ],
)
async def test_a_heartbeat_breaking_the_sockets_own_rules_closes_it_as_any_message(
    port, http_client, base_url, message, code
):
    ws = await connect(port)
    await ws.write_message(message)
    deadline = time.monotonic() + 5
    while await read(ws) is not None:  # frames already on the way, then the close
        assert time.monotonic() < deadline, "not closed"
    assert ws.close_code == code
    ws.close()
    assert (await status(http_client, base_url))["kiosks"] == []


# -- the real application: the beacon (POST heartbeat) ----------------------------------
async def post(
    http_client, base_url: str, body: bytes | str, content_type: str = "application/json", path="/heartbeat"
):
    request = HTTPRequest(
        base_url + path, method="POST", body=body, headers={"Content-Type": content_type}, request_timeout=5
    )
    try:
        response = await http_client.fetch(request)
    except HTTPClientError as exc:
        assert exc.response is not None
        return exc.code, exc.response.body.decode()
    return response.code, response.body.decode()


@pytest.mark.gen_test(timeout=30)
async def test_a_beacon_is_recorded(http_client, base_url):
    code, body = await post(http_client, base_url, json.dumps({**HEARTBEAT, "id": "beacon-1"}))
    assert (code, body) == (204, "")
    code, _ = await post(
        http_client, base_url, json.dumps({**HEARTBEAT, "id": "beacon-2"}), path="/cameras/files/heartbeat/"
    )
    assert code == 204
    kiosks = {k["id"]: k for k in (await status(http_client, base_url))["kiosks"]}
    assert kiosks["beacon-1"]["transport"] == "http" and kiosks["beacon-1"]["state"] == "live"
    assert kiosks["beacon-1"]["camera"] == "files" and kiosks["beacon-1"]["frames_shown"] == 42
    assert kiosks["beacon-1"]["connections"] == 0 and kiosks["beacon-2"]["heartbeats"] == 1


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(
    ("body", "content_type", "code", "says"),
    [
        (json.dumps(HEARTBEAT), "text/plain", 415, "application/json"),
        (json.dumps(HEARTBEAT), "application/x-www-form-urlencoded", 415, "application/json"),
        ("{not json", "application/json", 400, "must be JSON"),
        (b"\xff\xfe\x00", "application/json", 400, "must be JSON"),
        ("[" * 4000, "application/json", 400, "must be JSON"),  # nested deeper than json.loads goes
        ("[1]", "application/json", 400, "JSON object"),
        (json.dumps({**HEARTBEAT, "type": "hello"}), "application/json", 400, "JSON object"),
        (json.dumps({**HEARTBEAT, "id": None}), "application/json", 400, "needs an id"),
        (json.dumps({**HEARTBEAT, "frames_shown": -1}), "application/json", 400, "frames_shown must be"),
        (json.dumps({**HEARTBEAT, "viewport": [1, 2, 3]}), "application/json", 400, "viewport must be"),
        ("x" * (MAX_BEACON_BYTES + 1), "application/json", 413, "at most"),
    ],
)
async def test_a_bad_beacon_is_one_line_4xx_and_not_recorded(
    http_client, base_url, body, content_type, code, says
):
    got, text = await post(http_client, base_url, body, content_type)
    assert got == code and says in text, text
    assert text.count("\n") == 1 and "Traceback" not in text
    assert (await status(http_client, base_url))["kiosks"] == []


@pytest.mark.gen_test(timeout=30)
async def test_a_beacon_is_a_post_only(http_client, base_url):
    with pytest.raises(HTTPClientError) as refused:
        await http_client.fetch(base_url + "/heartbeat")
    assert refused.value.code == 405


@pytest.mark.gen_test(timeout=60)
async def test_a_flood_of_beacons_is_bounded(http_client, base_url):
    for n in range(100):
        code, _ = await post(http_client, base_url, json.dumps({"type": "heartbeat", "id": f"flood-{n}"}))
        assert code == 204
    kiosks = (await status(http_client, base_url))["kiosks"]
    assert len(kiosks) == 64 and kiosks[-1]["id"] == "flood-99"
