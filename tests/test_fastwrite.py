"""``write_now``: the fan-out's write of one frame to one socket, against real sockets."""

from __future__ import annotations

import asyncio
import base64
import socket

import pytest
import tornado.web
import tornado.websocket
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream, StreamClosedError
from tornado.testing import bind_unused_port

from handlers.fastwrite import binary_frame, websocket_stream, write_now


@pytest.fixture
def pair(io_loop):
    """A Tornado IOStream and the raw socket at the other end (a loopback TCP connection)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.create_connection(listener.getsockname())
        server_side, _ = listener.accept()
    stream = IOStream(server_side)
    yield stream, peer
    stream.close()
    peer.close()


async def receive(peer: socket.socket, size: int, timeout_s: float = 10.0) -> bytes:
    """Read ``size`` bytes from a blocking socket without blocking the IOLoop."""
    loop = asyncio.get_running_loop()
    peer.settimeout(timeout_s)
    chunks = []
    got = 0
    while got < size:
        chunk = await loop.run_in_executor(None, peer.recv, size - got)
        assert chunk, "the connection closed early"
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


@pytest.mark.gen_test(timeout=20)
async def test_a_frame_that_fits_is_sent_at_once_without_a_future(pair):
    stream, peer = pair
    data = bytes(range(256)) * 160  # 40 KB
    assert write_now(stream, data) is None
    assert not stream.writing()
    assert await receive(peer, len(data)) == data


@pytest.mark.slow
@pytest.mark.gen_test(timeout=20)
async def test_a_remainder_is_queued_and_its_future_says_when_it_is_written(pair):
    stream, peer = pair
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    data = bytes(range(251)) * 40_000  # 10 MB: more than the kernel buffers take
    future = write_now(stream, data)
    assert future is not None and not future.done()
    assert stream.writing()
    assert await receive(peer, len(data)) == data
    await asyncio.wait_for(future, 10)
    # Free again: the next frame goes straight out.
    assert write_now(stream, b"next") is None
    assert await receive(peer, 4) == b"next"


@pytest.mark.gen_test(timeout=20)
async def test_bytes_queued_before_go_first(pair):
    stream, peer = pair
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    head = b"h" * 3_000_000
    first = stream.write(head)
    assert stream.writing()
    later = write_now(stream, b"frame")
    assert later is not None  # queued behind the head, not sent around it
    assert await receive(peer, len(head) + 5) == head + b"frame"
    await asyncio.wait_for(asyncio.gather(first, later), 10)


@pytest.mark.gen_test(timeout=20)
async def test_a_closed_stream_raises(pair):
    stream, _peer = pair
    stream.close()
    with pytest.raises(StreamClosedError):
        write_now(stream, b"x")


@pytest.mark.gen_test(timeout=20)
async def test_a_reset_connection_closes_the_stream(pair):
    stream, peer = pair
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    peer.close()  # RST
    with pytest.raises(StreamClosedError):
        for _ in range(100):  # the reset is seen by the first or a later send
            write_now(stream, b"x" * 65536)
            await asyncio.sleep(0.01)
    assert stream.closed()


# -- the WebSocket frames written past Tornado ---------------------------------------
class _Echo(tornado.websocket.WebSocketHandler):
    """Sends what the test asks through Tornado's own write_message, and checks that
    the stream it would write to is the one :func:`websocket_stream` finds."""

    def get_compression_options(self) -> None:
        return None  # as the server's WsHandler

    def on_message(self, message: str | bytes) -> None:
        assert websocket_stream(self.ws_connection) is self.ws_connection.stream  # type: ignore[union-attr]
        size = int(message)
        self.write_message(bytes(i % 251 for i in range(size)), binary=True)


@pytest.fixture
def echo_port(io_loop):
    sock, port = bind_unused_port()
    http = HTTPServer(tornado.web.Application([(r"/echo", _Echo)]))
    http.add_sockets([sock])
    yield port
    http.stop()


def _handshake(port: int) -> socket.socket:
    key = base64.b64encode(b"camstream-tests!").decode()
    peer = socket.create_connection(("127.0.0.1", port), timeout=10)
    peer.sendall(
        (
            f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    return peer


def _masked_text(text: str) -> bytes:
    payload = text.encode()
    mask = b"\x01\x02\x03\x04"
    return bytes((0x81, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 300_000])
async def test_tornado_frames_a_binary_message_as_binary_frame_does(echo_port, size):
    """The server writes pre-built frames (binary_frame) onto the stream Tornado
    writes its own messages to.  If a Tornado release frames messages otherwise
    (or moves its stream), this fails: see handlers/fastwrite.py and the range in setup.py."""
    loop = asyncio.get_running_loop()
    peer = await loop.run_in_executor(None, _handshake, echo_port)
    try:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await loop.run_in_executor(None, peer.recv, 4096)
            assert chunk, "closed during the handshake"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101")
        rest = head.partition(b"\r\n\r\n")[2]
        peer.sendall(_masked_text(str(size)))
        expected = binary_frame(bytes(i % 251 for i in range(size)))
        got = rest + await receive(peer, len(expected) - len(rest))
        assert got == expected
    finally:
        peer.close()
