"""The HTML pages and their scripts and styles, from ``static/``.

Every URL in a page is relative, so the same page works at ``/``, at
``/cameras/NAME/`` and behind a proxy that strips a prefix.  The pages are
Tornado templates (autoescaped): the camera's name goes in the title and
the list page lists the cameras.
"""

from __future__ import annotations

from typing import Any

import tornado.template
import tornado.web

from handlers.access import Access, check
from handlers.common import BaseHandler
from handlers.plain import write_short_error


class StaticHandler(tornado.web.StaticFileHandler):
    """Scripts and styles of the pages; short errors, never a file listing."""

    def prepare(self) -> None:
        if check(self) and any("\x00" in arg for arg in self.path_args):
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
        f"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors {frame_ancestors}"
    )


class PageHandler(BaseHandler):
    """One page of the static folder (``page=`` in the URL table), rendered with ``values``.

    Every page is sent with a ``Content-Security-Policy`` that allows only
    this server's own scripts, styles, pictures and sockets, with
    ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``
    (a ``?token=`` in the page's URL must not leak to other sites).
    ``frame_ancestors`` says who may show the page in a frame: nobody
    (``'none'``, the default), or for ``/kiosk`` anyone (``*``; see the URL
    table to restrict it).  With ``slash_redirect``, a
    request for the page with a trailing slash (``/viewer/``) is redirected to
    ``../viewer``, a relative location, so the page's relative URLs
    (``static/...``, ``ws``) resolve as they should, also behind a proxy that
    strips a prefix.
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
        if not check(self):
            return
        path = self.request.path
        if self.slash_redirect and path.endswith("/"):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            query = self.request.query
            self.redirect(f"../{name}" + (f"?{query}" if query else ""), permanent=True)

    def get(self, *args: str) -> None:
        access: Access | None = self.application.settings.get("access")
        query = access.page_query(self.request) if access else ""
        body = self.loader.load(self.page).generate(query=query, **self.values)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Content-Security-Policy", page_policy(self.frame_ancestors))
        if self.frame_ancestors == "'none'":
            self.set_header("X-Frame-Options", "DENY")  # for browsers without frame-ancestors
        self.finish(body)

    head = get


class RelativeRedirectHandler(BaseHandler):
    """``GET``/``HEAD`` of ``/cameras/NAME``: a permanent, relative redirect to ``NAME/``."""

    def initialize(self, location: str) -> None:
        self.location = location

    def get(self, *args: str) -> None:
        query = self.request.query
        self.redirect(self.location + (f"?{query}" if query else ""), permanent=True)

    head = get
