"""The hot path of the fan-out: one frame's bytes onto one viewer's socket.

The feed calls a subscriber's ``send`` once per viewer per frame, so this is
where the cost of one more viewer lives.  The bytes of a frame are built
once per wire format (an MJPEG part, a WebSocket frame) and shared by every
viewer; :func:`write_now` puts them on a socket without copying them,
formatting anything or allocating a Future when it can:

* If the stream has nothing queued, it tries a non-blocking ``send`` first.
  On loopback and on any healthy link the whole frame fits in the socket
  buffer, so that is one system call and nothing else: no Future, no entry
  in the IOStream's write buffer, no write callback on the IOLoop.
* Whatever did not fit (a slow viewer) goes to ``IOStream.write`` as a
  ``memoryview`` of the shared bytes (no copy), and its Future tells the
  feed when this viewer is free again; until then the feed skips it.
* If the stream already has bytes queued (say the response head is still
  going out), the frame is queued behind them, so bytes never interleave.

TLS streams always go through ``IOStream.write`` (the raw socket would
bypass the encryption).

WebSocket frames are built once per frame by :func:`binary_frame` and written
with :func:`write_now` onto the connection's stream, bypassing Tornado's
``write_message`` (which would frame, and so copy, the bytes per client).
That relies on two things Tornado does not promise, kept here in one place
and checked by ``tests/test_fastwrite.py`` against the installed Tornado
(setup.py pins the range they were checked on): the connection object of a
``WebSocketHandler`` keeps its ``IOStream`` as ``.stream``
(:func:`websocket_stream`), and with compression off Tornado frames a server
message exactly as :func:`binary_frame` does, so both kinds of writes can
share the stream.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tornado.iostream import IOStream, SSLIOStream, StreamClosedError
from tornado.websocket import WebSocketProtocol


def write_now(stream: IOStream, data: bytes) -> asyncio.Future[Any] | None:
    """Write ``data`` to ``stream``: None if it is all written already, else the
    Future of the queued remainder.  Raises StreamClosedError if the stream is closed."""
    if stream.closed():
        raise StreamClosedError(real_error=stream.error)
    if stream.writing() or isinstance(stream, SSLIOStream):
        return stream.write(data)  # type: ignore[return-value]
    try:
        sent = stream.socket.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError as exc:
        stream.close(exc_info=exc)
        raise StreamClosedError(real_error=exc) from exc
    if sent == len(data):
        return None
    return stream.write(memoryview(data)[sent:])  # type: ignore[return-value]


def binary_frame(payload: bytes) -> bytes:
    """``payload`` as one complete, unmasked WebSocket binary frame (RFC 6455 5.2):
    FIN and opcode 2, no extension bits (no compression), the length in the
    shortest form.  Pure function, any thread."""
    size = len(payload)
    if size < 126:
        head = bytes((0x82, size))
    elif size < 1 << 16:
        head = bytes((0x82, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x82, 127)) + size.to_bytes(8, "big")
    return head + payload


def websocket_stream(connection: WebSocketProtocol) -> IOStream:
    """The IOStream under a WebSocket connection (``handler.ws_connection``), to
    write frames of :func:`binary_frame` onto.  Tornado keeps it in the
    connection's ``stream`` attribute, which is not public API: this is the one
    place that reads it, and a missing attribute raises AttributeError at once
    rather than writing somewhere else."""
    stream = connection.stream  # type: ignore[attr-defined]
    if not isinstance(stream, IOStream):
        raise AttributeError(f"Tornado's WebSocket connection has no IOStream in .stream (got {stream!r})")
    return stream
