"""Limits: the number of streams, viewers that take nothing, request sizes, and HTTPS/WSS."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import re
import socket
import ssl
import time
from pathlib import Path

import pytest
import tornado.websocket
from tornado.httpclient import HTTPClientError, HTTPRequest

import server
from feed import FrameFeed
from harness.colours import write_colour_frames
from tests.camera_polling import wait_for
from tests.fakes import FakeCamera, FakeSubscriber, ManualClock
from tests.mjpeg_client import StreamReader, open_stream, read_parts


@pytest.fixture
def settings(frames_dir: Path) -> server.Settings:
    return server.Settings.single("files", str(frames_dir), fps=30, max_clients=2)


# -- --max-clients --------------------------------------------------------------
@pytest.mark.gen_test(timeout=30)
async def test_streams_beyond_max_clients_get_503_and_the_others_go_on(http_client, base_url, port, feed):
    first, _head, first_parser = await open_stream(port)
    second, _head, second_parser = await open_stream(port)
    await read_parts(first, first_parser, 1)
    await read_parts(second, second_parser, 1)
    refused = await http_client.fetch(base_url + "/stream.mjpg", raise_error=False)
    assert refused.code == 503 and refused.headers["Retry-After"] == "10"
    assert refused.body == b"503 Service Unavailable: too many viewers, try again later\n"
    with pytest.raises(HTTPClientError) as ws_refused:
        await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/ws")
    assert ws_refused.value.code == 503
    # Snapshots and pages are not streams: still served.
    assert (await http_client.fetch(base_url + "/snapshot.jpg")).code == 200
    # The two viewers were not disturbed.
    sent = feed.frames_sent
    await read_parts(first, first_parser, 5)
    await read_parts(second, second_parser, 5)
    assert feed.frames_sent > sent
    # One leaves: room for one more.
    first.close()
    deadline = time.monotonic() + 5
    while feed.subscriber_count > 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    ws = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/ws")
    assert isinstance(await ws.read_message(), bytes), "frames first, no text until the client speaks"
    ws.close()
    second.close()


# -- viewers that take nothing -----------------------------------------------------------
def test_a_viewer_that_takes_nothing_is_dropped_after_the_stall_timeout():
    clock = ManualClock()
    camera = FakeCamera()
    feed = FrameFeed(camera, clock=clock, stall_timeout_s=30)
    stuck = FakeSubscriber()
    slow = FakeSubscriber()
    feed.subscribe(stuck)
    feed.subscribe(slow)
    camera.push()  # a new picture each time
    feed.tick()
    assert len(stuck.sent) == len(slow.sent) == 1
    for _ in range(19):  # 28.5 s
        clock.advance(1.0)
        camera.push()  # a new picture each time
        feed.tick()
        slow.complete()  # slow, but it takes something now and then
        clock.advance(0.5)
        camera.push()  # a new picture each time
        feed.tick()
    assert feed.subscriber_count == 2
    clock.advance(2.0)  # 30.5 s since the stuck one's only write began
    camera.push()  # a new picture each time
    feed.tick()
    assert feed.subscriber_count == 1 and stuck.closed_by_feed and not slow.closed_by_feed
    assert feed.status()["viewers_stalled"] == 1
    feed.close()


@pytest.mark.slow
def test_a_real_never_reader_is_disconnected_and_a_keeping_up_reader_is_not(start_server, tmp_path):
    frames = tmp_path / "big"
    write_colour_frames(frames, size=(2048, 1280))  # about 40 KB each: socket buffers fill in seconds
    proc = start_server("--camera", "files", "--source", str(frames), "--fps", "30", "--stall-timeout", "2")
    # A client that never reads, with a tiny receive buffer.
    never = socket.socket()
    reader = None
    try:
        never.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        never.connect(("127.0.0.1", proc.port))
        never.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = StreamReader(proc.port, "/stream.mjpg")
        status = wait_for(
            lambda: (s := json.loads(proc.get("/status")[2]))["viewers_stalled"] and s,
            timeout_s=60,
            what="the never-reader dropped",
            poll_s=0.1,
        )
        assert status["viewers_stalled"] == 1
        # The never-reader's connection is closed: reading it to the end finds EOF.
        never.settimeout(10)
        while never.recv(1 << 20):
            pass
        # The reader that keeps up is still served.
        count = len(reader.parts)
        reader.wait_for(count + 10, timeout_s=10)
    finally:
        never.close()
        if reader is not None:
            reader.close()


# -- request sizes and bodies ----------------------------------------------------------
def raw(port: int, data: bytes, timeout_s: float = 10.0) -> bytes:
    """Send ``data``; the response (head and Content-Length body), or what came before a close."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(data)
        answer = b""
        while True:
            head, sep, body = answer.partition(b"\r\n\r\n")
            if sep:
                found = re.search(rb"(?i)content-length: *(\d+)", head)
                if found and len(body) >= int(found.group(1)):
                    return answer
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return answer
            if not chunk:
                return answer
            answer += chunk


@pytest.mark.slow
@pytest.mark.parametrize(
    ("request_bytes", "statuses"),
    [
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", (b"414",)),
        (b"GET /snapshot.jpg?x=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", (b"414",)),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n", (b"431",)),
        (b"GET /ws HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 1\r\n" * 3000 + b"\r\n", (b"431",)),
        (b"POST /snapshot.jpg HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n", (b"400", b"413")),
        (b"POST /snapshot.jpg HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", (b"405",)),
    ],
)
def test_oversized_requests_and_bodies_are_refused(start_server, frames_dir, request_bytes, statuses):
    proc = start_server("--camera", "files", "--source", str(frames_dir))
    answer = raw(proc.port, request_bytes)
    assert answer.split(b" ", 2)[1] in statuses, answer[:200]
    assert b"Traceback" not in answer
    assert proc.get("/snapshot.jpg")[0] == 200  # still serving


# -- HTTPS and WSS --------------------------------------------------------------------
def self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "camstream test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return certfile, keyfile


@pytest.mark.slow
def test_https_and_wss(start_server, frames_dir, tmp_path, io_loop):
    certfile, keyfile = self_signed(tmp_path)
    proc = start_server(
        *("--camera", "files", "--source", str(frames_dir)),
        *("--certfile", str(certfile), "--keyfile", str(keyfile)),
    )
    assert f"on https://127.0.0.1:{proc.port}/" in proc.log_text()
    context = ssl.create_default_context(cafile=str(certfile))

    async def check() -> None:
        from tornado.httpclient import AsyncHTTPClient

        client = AsyncHTTPClient()
        response = await client.fetch(f"https://127.0.0.1:{proc.port}/snapshot.jpg", ssl_options=context)
        assert response.body.startswith(b"\xff\xd8")
        request = HTTPRequest(f"wss://127.0.0.1:{proc.port}/ws", ssl_options=context)
        ws = await tornado.websocket.websocket_connect(request)
        assert isinstance(await ws.read_message(), bytes), "frames first, no text until the client speaks"
        assert (await ws.read_message()).startswith(b"\xff\xd8")
        ws.close()
        # The stream, read through TLS.
        with (
            socket.create_connection(("127.0.0.1", proc.port), timeout=10) as raw_sock,
            context.wrap_socket(raw_sock, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while data.count(b"\xff\xd9") < 2:
                data += tls.recv(65536)
            assert data.startswith(b"HTTP/1.1 200") and b"Content-Length:" in data
        # Plain HTTP to the TLS port is not served.
        with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as plain:
            plain.sendall(b"GET /snapshot.jpg HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answer = plain.recv(65536)
            except ConnectionResetError:
                answer = b""
            assert b"\xff\xd8" not in answer

    io_loop.run_sync(check, timeout=30)
