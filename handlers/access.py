"""Who may watch: HTTP Basic credentials and access tokens, checked on every route.

One :class:`Access` lives in the application's settings (``"access"``); every
handler calls :func:`check` before anything else (the handlers' shared
``prepare``), so pages, streams, snapshots, the WebSocket, status, static
files and unknown paths alike answer ``401`` to a request without a valid
credential.  Accepted, in this order:

* ``Authorization: Basic ...`` matching ``--auth USER:PASSWORD``;
* ``Authorization: Bearer TOKEN`` or ``?token=TOKEN`` matching ``--token``
  (for an ``<img src>`` or a kiosk browser's start URL, where no header can
  be set).

Comparisons take constant time (``hmac.compare_digest`` on digests), and no
credential is ever logged (the access log shows ``token=***``).  A ``401``
carries ``WWW-Authenticate: Basic realm="camstream"`` when Basic
authentication is on: home-automation clients send credentials only after
such a challenge.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import quote

from tornado.httputil import HTTPServerRequest
from tornado.web import RequestHandler

from handlers.plain import finish_plain

REALM = "camstream"
_TOKEN_IN_QUERY = re.compile(r"(^|[?&])token=[^&]*")


def _digest(text: str | bytes) -> bytes:
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class Access:
    """The credentials a server accepts; both empty means everyone may watch."""

    #: ``USER:PASSWORD`` for HTTP Basic authentication, or None.
    basic: str | None = None
    #: The access token, or None.
    token: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.basic or self.token)

    def allows(self, request: HTTPServerRequest) -> bool:
        """Whether ``request`` carries a valid credential (always, when none is configured)."""
        if not self.enabled:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if self.basic and scheme == "basic":
            try:
                given = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(_digest(given), _digest(self.basic))
        if self.token and scheme == "bearer":
            return hmac.compare_digest(_digest(value), _digest(self.token))
        if self.token:
            for given in request.query_arguments.get("token", []):
                if hmac.compare_digest(_digest(given), _digest(self.token)):
                    return True
        return False

    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value of a 401."""
        if self.basic:
            return f'Basic realm="{REALM}", charset="UTF-8"'
        return f'Bearer realm="{REALM}"'

    def page_query(self, request: HTTPServerRequest) -> str:
        """``?token=...`` for the URLs of a page opened with ``?token=``, else ``""``:
        the page passes the token on to the streams, sockets and files it opens."""
        if not self.token:
            return ""
        given = request.query_arguments.get("token", [])
        if given and hmac.compare_digest(_digest(given[0]), _digest(self.token)):
            return "?token=" + quote(self.token, safe="")
        return ""


def redact(uri: str) -> str:
    """``uri`` with any ``token=`` value hidden, for logs."""
    return _TOKEN_IN_QUERY.sub(r"\1token=***", uri)


def check(handler: RequestHandler) -> bool:
    """True if the request carries a valid credential (or none is configured), or
    is a CORS preflight; else finish it with 401 and return False."""
    access: Access | None = handler.application.settings.get("access")
    if access is None or access.allows(handler.request):
        return True
    if handler.request.method == "OPTIONS":
        return True  # CORS preflights carry no credentials; they get headers only, never data
    finish_plain(
        handler, 401, "Unauthorized: this camera needs credentials", {"WWW-Authenticate": access.challenge()}
    )
    return False
