"""The HTML pages (Tornado templates from ``templates/``) and their scripts and
styles (files from ``static/``).

Every URL in a page is relative, so the same page works at ``/``, at
``/cameras/NAME/`` and behind a proxy that strips a prefix.  The pages are
Tornado templates (autoescaped): the camera's name goes in the title and
the list page lists the cameras.

A proxy that strips a prefix may say which in ``X-Forwarded-Prefix``: the page
then carries ``<base href="PREFIX/DIR/">`` (``DIR``: the directory of the
request's path), so its relative URLs resolve under the prefix even when the
browser's URL lacks the trailing slash (a proxy mapping exactly ``/webcam`` to
``/``).  Only a clean absolute path is taken (see :func:`clean_prefix`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import tornado.template
import tornado.web

from handlers.access import Access
from handlers.base import BaseHandler, admit
from handlers.limits import check_size
from handlers.plain import write_short_error

log = logging.getLogger(__name__)

#: The longest prefix taken (``X-Forwarded-Prefix``, ``--base-path``).
MAX_PREFIX_CHARS = 200
#: Segments of unreserved URL characters, none of them "." or "..", each after one slash.
_PREFIX = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._~-]+)*/?")


def clean_prefix(text: str) -> str | None:
    """``text`` without its trailing slash if it is a clean absolute URL path, else None.

    Clean: starts with one ``/``, segments of letters, digits, ``-``, ``.``,
    ``_`` and ``~`` separated by single slashes, no ``.`` or ``..`` segment,
    at most :data:`MAX_PREFIX_CHARS` characters; so no scheme, host, query,
    quote, percent-escape or ``//``.  ``"/"`` gives ``""`` (no prefix).
    Pure function, any thread.
    """
    if len(text) > MAX_PREFIX_CHARS or not text.startswith("/") or not _PREFIX.fullmatch(text):
        return None
    return text.rstrip("/")


class StaticHandler(tornado.web.StaticFileHandler):
    """Scripts and styles of the pages; short errors, never a file listing."""

    def prepare(self) -> None:
        if admit(self) and any("\x00" in arg for arg in self.path_args):
            # A NUL byte can name no file (and would make the file system call raise).
            self.send_error(404)

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")

    def write_error(self, status_code: int, **kwargs: object) -> None:
        write_short_error(self, status_code)


def page_policy(frame_ancestors: str) -> str:
    """The pages' Content-Security-Policy: nothing but this server's own files and sockets."""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        f"connect-src 'self'; base-uri 'self'; form-action 'none'; frame-ancestors {frame_ancestors}"
    )


class PageHandler(BaseHandler):
    """One page of the templates folder (``page=`` in the URL table), rendered with ``values``.

    Every page is sent with a ``Content-Security-Policy`` that allows only
    this server's own scripts, styles, pictures and sockets, with
    ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``
    (a ``?token=`` in the page's URL must not leak to other sites).
    ``frame_ancestors`` says who may show the page in a frame: nobody
    (``'none'``, the default), or for ``/kiosk`` whom ``--frame-ancestors``
    says (default ``*``: anyone).  With ``slash_redirect``, a
    request for the page with a trailing slash (``/viewer/``) is redirected to
    ``../viewer``, a relative location, so the page's relative URLs
    (``static/...``, ``ws``) resolve as they should, also behind a proxy that
    strips a prefix.  With a clean ``X-Forwarded-Prefix`` (a proxy that strips
    that prefix) the page gets a ``<base href>`` under it (see the module's
    docstring); the response varies on that header.
    """

    def initialize(
        self,
        loader: tornado.template.BaseLoader,
        page: str,
        values: dict[str, Any] | None = None,
        frame_ancestors: str = "'none'",
        slash_redirect: bool = True,
    ) -> None:
        self.loader = loader
        self.page = page
        self.values = dict(values or {})
        self.frame_ancestors = frame_ancestors
        self.slash_redirect = slash_redirect

    def prepare(self) -> None:
        if not admit(self):
            return
        path = self.request.path
        if self.slash_redirect and path.endswith("/"):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            query = self.request.query
            self.redirect(f"../{name}" + (f"?{query}" if query else ""), permanent=True)

    def get(self, *args: str) -> None:
        access: Access | None = self.application.settings.get("access")
        query = access.page_query(self.request) if access else ""
        body = self.loader.load(self.page).generate(query=query, base=self.base_href(), **self.values)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Vary", "X-Forwarded-Prefix")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Content-Security-Policy", page_policy(self.frame_ancestors))
        if self.frame_ancestors == "'none'":
            self.set_header("X-Frame-Options", "DENY")  # for browsers without frame-ancestors
        self.finish(body)

    head = get

    def base_href(self) -> str:
        """The page's ``<base href>``: the ``X-Forwarded-Prefix`` followed by the
        directory of the request's path (``/webcam`` and ``/viewer`` give
        ``/webcam/``), or ``""`` without the header or when it is not a clean path."""
        header = self.request.headers.get("X-Forwarded-Prefix")
        if header is None:
            return ""
        prefix = clean_prefix(header.strip())
        if prefix is None:
            log.debug("X-Forwarded-Prefix %r ignored: not a clean absolute path", header[:80])
            return ""
        path = self.request.path
        return prefix + path[: path.rfind("/") + 1]


class FaviconHandler(BaseHandler):
    """``/favicon.ico``, which browsers ask for whenever they show something of
    the server that is not one of its pages (a stream, a snapshot, ``/status``).

    The icon (``static/favicon.ico``, read once at start) is answered to anyone,
    without credentials: it tells nothing that the ``401``'s realm does not, and a
    browser asks for it without the page's ``?token=``, so a ``401`` would be
    logged on every visit.  Cached for a day.  A ``200`` is logged at DEBUG."""

    def initialize(self, icon: bytes) -> None:
        self.icon = icon

    def prepare(self) -> None:
        check_size(self)  # no credentials asked: see the class's docstring

    def get(self) -> None:
        self.set_header("Content-Type", "image/x-icon")
        self.set_header("Cache-Control", "public, max-age=86400")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(self.icon)

    head = get


class RelativeRedirectHandler(BaseHandler):
    """``GET``/``HEAD`` of ``/cameras/NAME``: a permanent, relative redirect to ``NAME/``."""

    def initialize(self, location: str) -> None:
        self.location = location

    def get(self, *args: str) -> None:
        query = self.request.query
        self.redirect(self.location + (f"?{query}" if query else ""), permanent=True)

    head = get
