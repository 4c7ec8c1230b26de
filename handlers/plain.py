"""Short plain-text answers: every refusal and error of the server, in one form.

``STATUS Reason[: detail]`` on one line, ``text/plain``, never cached, never
HTML, never a traceback.  Functions of a handler rather than methods, because
the static files and the WebSocket derive from Tornado's own handler classes.
"""

from __future__ import annotations

import http

from tornado.web import RequestHandler


def finish_plain(
    handler: RequestHandler, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    """Finish ``handler``'s request with ``status`` and the one line ``"{status} {message}"``."""
    handler.clear()
    handler.set_status(status)
    handler.set_header("Content-Type", "text/plain; charset=utf-8")
    handler.set_header("Cache-Control", "no-store, no-cache, must-revalidate, max-age=0")
    for name, value in (headers or {}).items():
        handler.set_header(name, value)
    handler.finish(f"{status} {message}\n")


def write_short_error(handler: RequestHandler, status_code: int) -> None:
    """``write_error`` for every handler: the status and its reason phrase, nothing else."""
    try:
        phrase = http.HTTPStatus(status_code).phrase
    except ValueError:
        phrase = "Error"
    handler.set_header("Content-Type", "text/plain; charset=utf-8")
    handler.finish(f"{status_code} {phrase}\n")
