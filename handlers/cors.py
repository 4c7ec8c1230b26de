"""Other origins: which may open the WebSocket and ``fetch()`` streams and snapshots.

Same origin only by default; ``--allow-origin`` adds origins, kept in the
application's settings (``"allow_origins"``) and read here by the WebSocket's
origin check and by the CORS headers of streams and snapshots alike.
"""

from __future__ import annotations

import urllib.parse

import tornado.web

from handlers.plain import finish_plain


def normalize_origin(text: str) -> str:
    """``scheme://host[:port]`` in the form browsers send in ``Origin``.

    Lower-case scheme and host, no default port, no trailing slash.  Raises
    ValueError for anything that is not an http(s) origin (a path, a query,
    user info, a missing host).
    """
    value = text.strip()
    parts = urllib.parse.urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an origin like https://example.com[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{text!r} is not an origin: no path, query or user info allowed")
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{text!r} has a bad port") from exc
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    default = 80 if scheme == "http" else 443
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


def origin_allowed(handler: tornado.web.RequestHandler, origin: str) -> bool:
    """Whether ``origin`` is one of the application's ``allow_origins`` (``--allow-origin``):
    the one list for the WebSocket's cross-origin check and for CORS."""
    allowed: frozenset[str] = handler.application.settings.get("allow_origins", frozenset())
    try:
        return bool(allowed) and normalize_origin(origin) in allowed
    except ValueError:
        return False


def cors_headers(handler: tornado.web.RequestHandler) -> dict[str, str]:
    """CORS headers for a request from an origin given with ``--allow-origin``, else none.

    Streams and snapshots send them so that web apps of those origins can
    ``fetch()`` them (credentials included); no other origin gets any.
    """
    origin = handler.request.headers.get("Origin")
    if not origin or not origin_allowed(handler, origin):
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Expose-Headers": "X-Timestamp",
        "Vary": "Origin",
    }


def answer_preflight(handler: tornado.web.RequestHandler) -> None:
    """``OPTIONS`` (a CORS preflight, which never carries credentials): 204 with the
    CORS headers for an allowed origin, 403 for any other."""
    headers = cors_headers(handler)
    if not headers:
        finish_plain(handler, 403, "Forbidden: this origin may not read this camera")
        return
    for name, value in headers.items():
        handler.set_header(name, value)
    handler.set_header("Access-Control-Allow-Methods", "GET, HEAD")
    handler.set_header("Access-Control-Allow-Headers", "Authorization")
    handler.set_header("Access-Control-Max-Age", "600")
    handler.set_status(204)
    handler.finish()
