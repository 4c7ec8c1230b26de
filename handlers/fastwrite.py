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
"""

from __future__ import annotations

import asyncio
from typing import Any

from tornado.iostream import IOStream, SSLIOStream, StreamClosedError


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
