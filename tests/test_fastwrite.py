"""``write_now``: the fan-out's write of one frame to one socket, against real sockets."""

from __future__ import annotations

import asyncio
import socket

import pytest
from tornado.iostream import IOStream, StreamClosedError

from handlers.fastwrite import write_now


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
