"""The reference of the fan-out benchmark: the same bytes to the same sockets with
nothing but ``socket.send`` in a tight loop.

    .venv/bin/python bench/reference.py --source FRAMES_DIR [--fps 30] [--port 0]

A bare MJPEG server: it answers every connection with the stream's response
head, then every 1/fps seconds builds the next frame's part once (the same
Content-Length + X-Timestamp framing as the server) and sends it to every
socket with a blocking ``sendall``.  No parsing, no event loop, no
bookkeeping: the cost of moving the bytes through the kernel, which no
server can go below.  ``bench/fanout.py`` measures the server's CPU per
delivered frame as a ratio to this one's, under the same load generator.
Logs ``listening on 127.0.0.1:PORT``; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import selectors
import signal
import socket
import sys
import time
from pathlib import Path

log = logging.getLogger("bench.reference")

HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: multipart/x-mixed-replace; boundary=frame\r\n"
    b"Cache-Control: no-store\r\n"
    b"Connection: close\r\n\r\n"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="a folder of .jpg files")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    jpegs = [p.read_bytes() for p in sorted(Path(args.source).glob("*.jpg"))]
    if not jpegs:
        parser.error(f"{args.source}: no .jpg files")
    listener = socket.create_server(("127.0.0.1", args.port), backlog=1024)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    log.info("listening on 127.0.0.1:%d", listener.getsockname()[1])
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    clients: list[socket.socket] = []
    interval = 1.0 / args.fps
    due = time.monotonic()
    index = 0
    while running:
        # Accept (and answer) new viewers until the next frame is due.
        for _key, _mask in selector.select(max(0.0, due - time.monotonic())):
            try:
                sock, _addr = listener.accept()
            except BlockingIOError:
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(5.0)
            try:
                sock.recv(65536)  # the request; its content does not matter here
                sock.sendall(HEAD)
            except OSError:
                sock.close()
                continue
            clients.append(sock)
        if time.monotonic() < due:
            continue
        due += interval
        jpeg = jpegs[index % len(jpegs)]
        index += 1
        head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\nX-Timestamp: %.6f\r\n\r\n" % (
            len(jpeg),
            time.time(),
        )
        data = b"".join((head, jpeg, b"\r\n"))
        gone = []
        for sock in clients:
            try:
                sock.sendall(data)
            except OSError:
                gone.append(sock)
        for sock in gone:
            clients.remove(sock)
            sock.close()
    for sock in clients:
        sock.close()
    listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
