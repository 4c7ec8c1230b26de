"""The HTML pages, served from ``static/`` (relative URLs, so any prefix works)."""

from __future__ import annotations

import tornado.web


class StaticHandler(tornado.web.StaticFileHandler):
    """Scripts and styles of the pages; short errors, never a file listing."""

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")

    def write_error(self, status_code: int, **kwargs: object) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}\n")


class PageHandler(StaticHandler):
    """One fixed page of the static folder (``page=`` in the URL table).

    ``headers`` are added to the page's responses (``/kiosk`` uses it for its
    ``Content-Security-Policy: frame-ancestors``).  A request for the page
    with a trailing slash (``/viewer/``) is redirected to ``../viewer``, a
    relative location, so the page's relative URLs (``static/...``, ``ws``)
    resolve as they should, also behind a proxy that strips a prefix.
    """

    def initialize(  # type: ignore[override]
        self, path: str, page: str, headers: dict[str, str] | None = None
    ) -> None:
        super().initialize(path)
        self.page = page
        self.extra_headers = dict(headers or {})

    def prepare(self) -> None:
        path = self.request.path
        if path != "/" and path.endswith("/"):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            query = self.request.query
            self.redirect(f"../{name}" + (f"?{query}" if query else ""), permanent=True)

    def set_extra_headers(self, path: str) -> None:
        super().set_extra_headers(path)
        for name, value in self.extra_headers.items():
            self.set_header(name, value)

    def get(self, *args: str, include_body: bool = True):  # type: ignore[override]
        return super().get(self.page, include_body=include_body)

    def head(self, *args: str):  # type: ignore[override]
        return super().head(self.page)
