"""Logging that never blocks the IOLoop.

Every log record of the process goes into a bounded queue (``logging``'s
``QueueHandler``, which never waits) and one writer thread takes them out
and writes them to the sink (standard error, the journal under systemd).  A
sink that stops reading (a full pipe, a stalled terminal, a journal that
lags) then blocks only that thread: viewers keep their frames.  When the
queue is full, records are dropped and counted, and the writer says how many
once the sink takes lines again.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
import threading
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Records waiting for the sink at most; beyond, new ones are dropped (and counted).
QUEUE_RECORDS = 10_000


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """A QueueHandler that drops a record when its bounded queue is full, rather
    than raising (which would print a traceback to the very sink that is stuck)."""

    def __init__(self, records: queue.Queue[logging.LogRecord | None]) -> None:
        super().__init__(records)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1  # a plain int: updated under the handler's lock


class LogWriter:
    """The writer thread: takes records from the queue and writes them to ``sink``."""

    def __init__(self, handler: DroppingQueueHandler, sink: logging.Handler) -> None:
        self.handler = handler
        self.sink = sink
        self._reported = 0
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        records = self.handler.queue
        while True:
            record = records.get()
            if record is None:
                return
            self.sink.handle(record)
            dropped = self.handler.dropped
            if dropped != self._reported:
                lost = dropped - self._reported
                self._reported = dropped
                note = logging.LogRecord(
                    __name__,
                    logging.WARNING,
                    __file__,
                    0,
                    "%d log lines dropped: the log sink fell behind",
                    (lost,),
                    None,
                )
                self.sink.handle(note)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Write what is queued (waiting at most ``timeout_s`` for a stuck sink), then
        end the thread.  Any thread but the writer's."""
        try:
            self.handler.queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)


def start_logging(level: str, stream: TextIO | None = None) -> LogWriter:
    """Send every record of ``level`` and above (``"info"``...) through the queue to
    ``stream`` (standard error by default).  Returns the writer; call its
    ``stop()`` at exit.  Replaces the root logger's handlers."""
    sink = logging.StreamHandler(stream if stream is not None else sys.stderr)
    sink.setFormatter(logging.Formatter(FORMAT))
    records: queue.Queue[logging.LogRecord | None] = queue.Queue(QUEUE_RECORDS)
    handler = DroppingQueueHandler(records)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    writer = LogWriter(handler, sink)
    writer.start()
    return writer
