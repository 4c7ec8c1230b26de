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
    """One fixed page of the static folder (``page=`` in the URL table)."""

    def initialize(self, path: str, page: str) -> None:  # type: ignore[override]
        super().initialize(path)
        self.page = page

    def get(self, *args: str, include_body: bool = True):  # type: ignore[override]
        return super().get(self.page, include_body=include_body)

    def head(self, *args: str):  # type: ignore[override]
        return super().head(self.page)
