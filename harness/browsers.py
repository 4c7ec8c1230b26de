"""The browsers of the page tests and benchmarks: Chromium, Firefox ESR and WebKitGTK behind
one page interface.

The tests speak the subset of Playwright's ``Page`` API they need: ``goto``,
``evaluate(function, arg)``, ``wait_for_function(function, arg, timeout)``,
``screenshot()`` (the viewport, PNG bytes), ``locator(css)`` (``count``, ``nth``,
``locator``, ``screenshot``, ``click``, ``is_visible``, ``is_hidden``, ``inner_text``,
``text_content``, ``get_attribute``, ``evaluate``, ``evaluate_all``,
``scroll_into_view_if_needed``), ``click(css)``, ``keyboard.press(key)``, ``url``,
``wait_for_url``, ``wait_for_timeout`` and ``add_init_script``.  Every script is a
JavaScript *function* (``"() => ..."``, ``"x => ..."``); its argument and result
cross as JSON.  Timeouts are in milliseconds, as in Playwright; a wait that runs
out raises :class:`TimeoutError`.

- ``chromium``: Debian's Chromium through Playwright; the page is Playwright's own.
- ``firefox``: Debian's firefox-esr, headless, through WebDriver BiDi (JSON over the
  WebSocket of ``--remote-debugging-port``): ``script.callFunction``,
  ``script.addPreloadScript`` for init scripts, ``browsingContext.captureScreenshot``,
  ``input.performActions``.  A fresh profile whose prefs stop Firefox's own traffic.
- ``webkit``: WebKitGTK's MiniBrowser through WebKitWebDriver (classic WebDriver with
  Selenium: WebKitWebDriver 2.50 refuses ``webSocketUrl``, so no BiDi), on an Xvfb
  display started for it.  Classic WebDriver has no init scripts: a page given one is
  loaded through :class:`TestProxy`, which adds a ``<script>`` of them at the top of
  every HTML page it passes on (see :meth:`WebKitPage.goto`).

Every process is started by this module and ended by its PID: nothing else is touched.
All calls block the calling thread; none may be made from the IOLoop.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import io
import json
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from PIL import Image

from harness.process import stop_process

ENGINES = ["chromium", "firefox", "webkit"]
CHROMIUM = "/usr/bin/chromium"
FIREFOX = "/usr/bin/firefox-esr"
WEBKIT_DRIVER = "/usr/bin/WebKitWebDriver"
XVFB = "/usr/bin/Xvfb"
#: Debian's webkit2gtk ships it in the architecture's library folder.
MINIBROWSER = next(
    iter(sorted(glob.glob("/usr/lib/*/webkit2gtk-4.1/MiniBrowser"))),
    "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser",
)
VIEWPORT = (1280, 720)

#: WebDriver's code points of the keys the tests press by name.
KEYS = {
    "ArrowLeft": "\ue012",
    "ArrowUp": "\ue013",
    "ArrowRight": "\ue014",
    "ArrowDown": "\ue015",
    "Enter": "\ue007",
    "Escape": "\ue00c",
    "Tab": "\ue004",
    "Backspace": "\ue003",
}

#: Firefox without a network of its own: no updates, telemetry, safe browsing, captive
#: portal or connectivity checks, remote settings, add-on or plugin downloads, prefetching.
FIREFOX_ARGS = ["--remote-debugging-port", "0", "about:blank"]

FIREFOX_PREFS: dict[str, object] = {
    "app.update.auto": False,
    "app.update.enabled": False,
    "app.update.disabledForTesting": True,
    "app.normandy.enabled": False,
    "app.shield.optoutstudies.enabled": False,
    "browser.aboutwelcome.enabled": False,
    "browser.discovery.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.newtabpage.activity-stream.feeds.section.topstories": False,
    "browser.newtabpage.activity-stream.feeds.topsites": False,
    "browser.newtabpage.activity-stream.telemetry": False,
    "browser.ping-centre.telemetry": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.downloads.remote.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.provider.google.updateURL": "",
    "browser.safebrowsing.provider.google4.updateURL": "",
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "browser.search.geoip.url": "",
    "browser.search.update": False,
    "browser.sessionstore.resume_from_crash": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage": "about:blank",
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.page": 0,
    "browser.tabs.warnOnClose": False,
    "browser.topsites.contile.enabled": False,
    "captivedetect.canonicalURL": "",
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "extensions.blocklist.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.update.enabled": False,
    "geo.provider.network.url": "",
    "media.gmp-manager.updateEnabled": False,
    "media.gmp-gmpopenh264.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.http.speculative-parallel-limit": 0,
    "network.prefetch-next": False,
    "network.proxy.type": 0,
    "remote.prefs.recommended": True,
    "services.settings.server": "data:,#remote-settings-are-off",
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.server": "",
    "toolkit.telemetry.unified": False,
    # The tests' pages are the only tab that matters: never throttle it.
    "dom.min_background_timeout_value": 4,
}


class BrowserError(RuntimeError):
    """A browser did not start, or a command to it failed (a script threw, a bad selector)."""


# -- one Locator for the scripted engines ------------------------------------------
#: Resolves a locator's chain of ``[css, index]`` steps to its elements, in the page.
RESOLVE = """
const resolve = (chain) => {
  let found = [document];
  for (const [css, index] of chain) {
    const next = [];
    for (const root of found) next.push(...root.querySelectorAll(css));
    found = index === null ? next : next.slice(index < 0 ? next.length + index : index).slice(0, 1);
  }
  return found;
};
"""

#: Waits (polling) for a locator's first element; returns it, or throws after ``ms``.
FIRST = """
const first = async (chain, ms) => {
  const end = performance.now() + ms;
  for (;;) {
    const [element] = resolve(chain);
    if (element) return element;
    if (performance.now() > end) throw new Error(`no element for ${JSON.stringify(chain)} in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
};
const visible = (e) => {
  if (!e) return false;
  const r = e.getBoundingClientRect();
  return r.width > 0 && r.height > 0 && getComputedStyle(e).visibility !== "hidden";
};
"""

#: How long a locator's single-element action waits for its element, in milliseconds.
ACTION_TIMEOUT_MS = 10000


class Locator:
    """Playwright's ``Locator`` for :class:`ScriptPage`: a chain of CSS steps resolved
    in the page at each call.  Single-element calls wait for the first match."""

    def __init__(self, page: ScriptPage, chain: list[list[Any]]) -> None:
        self._page = page
        self._chain = chain

    def locator(self, css: str) -> Locator:
        return Locator(self._page, [*self._chain, [css, None]])

    def nth(self, index: int) -> Locator:
        *head, (css, _) = self._chain
        return Locator(self._page, [*head, [css, index]])

    def _on_first(self, body: str, extra: Any = None) -> Any:
        """``body`` (a function of ``(element, extra)``) on the first element, once there."""
        if self._page.synchronous:
            script = (
                f"([chain, extra]) => {{ {RESOLVE} const [e] = resolve(chain);"
                " if (!e) throw new Error(`no element for ${JSON.stringify(chain)}`);"
                f" return ({body})(e, extra); }}"
            )
            return self._page.evaluate(script, [self._chain, extra])
        script = (
            f"async ([chain, extra]) => {{ {RESOLVE}{FIRST}"
            f" const e = await first(chain, {ACTION_TIMEOUT_MS}); return ({body})(e, extra); }}"
        )
        return self._page.evaluate(script, [self._chain, extra])

    def count(self) -> int:
        return self._page.evaluate(f"chain => {{ {RESOLVE} return resolve(chain).length; }}", self._chain)

    def is_visible(self) -> bool:
        script = f"chain => {{ {RESOLVE}{FIRST} return visible(resolve(chain)[0]); }}"
        return self._page.evaluate(script, self._chain)

    def is_hidden(self) -> bool:
        return not self.is_visible()

    def inner_text(self) -> str:
        return self._on_first("e => e.innerText")

    def text_content(self) -> str:
        return self._on_first("e => e.textContent")

    def get_attribute(self, name: str) -> str | None:
        return self._on_first("(e, name) => e.getAttribute(name)", name)

    def evaluate(self, function: str, arg: Any = None) -> Any:
        return self._on_first(f"(e, arg) => ({function})(e, arg)", arg)

    def evaluate_all(self, function: str, arg: Any = None) -> Any:
        script = f"([chain, arg]) => {{ {RESOLVE} return ({function})(resolve(chain), arg); }}"
        return self._page.evaluate(script, [self._chain, arg])

    def scroll_into_view_if_needed(self) -> None:
        self._on_first("e => { e.scrollIntoView({ block: 'nearest', inline: 'nearest' }); }")

    def _box(self) -> dict[str, float]:
        """The element scrolled into view; its box in viewport CSS pixels."""
        return self._on_first(
            """e => {
              e.scrollIntoView({ block: "nearest", inline: "nearest" });
              const r = e.getBoundingClientRect();
              return { x: r.left, y: r.top, width: r.width, height: r.height };
            }"""
        )

    def screenshot(self) -> bytes:
        """PNG of the element as it is on screen (cut from a screenshot of the viewport)."""
        box = self._box()
        image = Image.open(io.BytesIO(self._page.screenshot())).convert("RGB")
        scale = image.width / self._page.evaluate("() => window.innerWidth")
        left, top = round(box["x"] * scale), round(box["y"] * scale)
        right, bottom = round((box["x"] + box["width"]) * scale), round((box["y"] + box["height"]) * scale)
        out = io.BytesIO()
        image.crop((max(0, left), max(0, top), min(image.width, right), min(image.height, bottom))).save(
            out, "PNG"
        )
        return out.getvalue()

    def click(self) -> None:
        """A real mouse click (press and release) at the element's centre."""
        box = self._box()
        self._page.mouse_click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


class Keyboard:
    """``page.keyboard``: ``press(key)`` sends a key down and up to the focused element."""

    def __init__(self, page: ScriptPage) -> None:
        self._page = page

    def press(self, key: str) -> None:
        self._page.key_press(KEYS.get(key, key))


class ScriptPage:
    """The page interface over an engine that runs scripts (:meth:`call`), takes
    viewport screenshots and sends input; the engines implement those few calls."""

    #: True for a page whose own scripts are off: no promises or timers run in it, so
    #: scripts are called without awaiting and waits poll from here.
    synchronous = False

    def __init__(self) -> None:
        self.keyboard = Keyboard(self)

    # -- what an engine provides
    def call(self, script: str, arg_json: str, timeout_s: float) -> str:
        """Runs the async JavaScript function ``script`` with the JSON text ``arg_json``
        in the page; returns its (awaited) result's JSON text; raises BrowserError."""
        raise NotImplementedError

    def screenshot(self) -> bytes:
        """PNG of the viewport."""
        raise NotImplementedError

    def mouse_click(self, x: float, y: float) -> None:
        raise NotImplementedError

    def key_press(self, key: str) -> None:
        raise NotImplementedError

    def goto(self, url: str) -> None:
        raise NotImplementedError

    def add_init_script(self, script: str) -> None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return self.evaluate("() => location.href")

    def close(self) -> None:
        raise NotImplementedError

    # -- Playwright's calls, in terms of those
    def evaluate(self, function: str, arg: Any = None, timeout_s: float = 60.0) -> Any:
        """The (awaited) result of the JavaScript function ``function(arg)``, through JSON."""
        if self.synchronous:
            script = (
                "(argJson) => { const value = (" + function + ")(JSON.parse(argJson));"
                " return JSON.stringify(value === undefined ? null : value); }"
            )
            return json.loads(self.call(script, json.dumps(arg), timeout_s))
        script = (
            "async (argJson) => { const value = await (" + function + ")(JSON.parse(argJson));"
            " return JSON.stringify(value === undefined ? null : value); }"
        )
        return json.loads(self.call(script, json.dumps(arg), timeout_s))

    def wait_for_function(
        self, function: str, arg: Any = None, timeout: float = 30000, polling: float | str = 20
    ) -> Any:
        """Polls ``function(arg)`` in the page (every ``polling`` ms, or each animation
        frame for ``"raf"``) until it is truthy; its value.  TimeoutError after ``timeout`` ms."""
        if self.synchronous:
            deadline = time.monotonic() + timeout / 1000
            while not (value := self.evaluate(function, arg)):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"wait_for_function timed out after {timeout:.0f} ms: {function.strip()}"
                    )
                time.sleep(0.02)  # polling the page with a deadline
            return value
        raf = "true" if polling == "raf" else "false"
        every = 20 if polling == "raf" else float(polling)
        script = f"""async ([arg, ms]) => {{
          const end = performance.now() + ms;
          for (;;) {{
            const value = await ({function})(arg);
            if (value) return value;
            if (performance.now() > end) return {{ __timedOut: true }};
            await new Promise((r) => ({raf} ? requestAnimationFrame(r) : setTimeout(r, {every})));
          }}
        }}"""
        value = self.evaluate(script, [arg, timeout], timeout_s=timeout / 1000 + 30)
        if isinstance(value, dict) and value.get("__timedOut"):
            raise TimeoutError(f"wait_for_function timed out after {timeout:.0f} ms: {function.strip()}")
        return value

    def locator(self, css: str) -> Locator:
        return Locator(self, [[css, None]])

    def click(self, css: str) -> None:
        self.locator(css).click()

    def wait_for_url(self, url: str, timeout: float = 30000) -> None:
        """Polls the page's URL until it is ``url`` (and the document has loaded)."""
        deadline = time.monotonic() + timeout / 1000
        current = None
        while time.monotonic() < deadline:
            with contextlib.suppress(BrowserError):  # a navigation under way
                current = self.evaluate("() => [location.href, document.readyState]")
                if current == [url, "complete"]:
                    return
            time.sleep(0.05)  # polling the page with a deadline
        raise TimeoutError(f"the page is at {current}, not {url}, after {timeout:.0f} ms")

    def wait_for_timeout(self, ms: float) -> None:
        """Playwright's pause, for a sampling interval (never to wait for something)."""
        time.sleep(ms / 1000)


# -- Firefox through WebDriver BiDi ------------------------------------------------
class Bidi:
    """One WebDriver BiDi session over a WebSocket; commands are answered in order.
    Events are not subscribed to."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self._exit = contextlib.ExitStack()
        self._ws = self._exit.enter_context(connect(url, max_size=None, open_timeout=10))
        self._next = 0
        self._lock = threading.Lock()

    def send(self, method: str, params: dict, timeout_s: float = 60.0) -> dict:
        """The command's result; BrowserError for an error answer or none in ``timeout_s``."""
        with self._lock:
            self._next += 1
            ident = self._next
            self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
            deadline = time.monotonic() + timeout_s
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrowserError(f"{method}: no answer within {timeout_s} s")
                try:
                    message = json.loads(self._ws.recv(timeout=left))
                except TimeoutError:
                    continue
                if message.get("id") != ident:
                    continue  # an event
                if message.get("type") == "error":
                    raise BrowserError(f"{method}: {message.get('error')}: {message.get('message')}")
                return message["result"]

    def close(self) -> None:
        self._exit.close()


class Firefox:
    """A headless firefox-esr with a fresh profile, driven over WebDriver BiDi."""

    name = "firefox"

    def __init__(self, prefs: dict[str, object] | None = None) -> None:
        if not os.path.exists(FIREFOX):
            raise BrowserError(f"{FIREFOX} is missing: run scripts/test.sh, which installs firefox-esr")
        self._dir = Path(tempfile.mkdtemp(prefix="camstream-firefox-"))
        profile = self._dir / "profile"
        profile.mkdir()
        (profile / "user.js").write_text(
            "".join(
                f"user_pref({json.dumps(k)}, {json.dumps(v)});\n"
                for k, v in {**FIREFOX_PREFS, **(prefs or {})}.items()
            )
        )
        self._log = self._dir / "firefox.log"
        with open(self._log, "wb") as out:
            self.proc = subprocess.Popen(
                [FIREFOX, "--headless", "--no-remote", "--profile", str(profile), *FIREFOX_ARGS],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "MOZ_CRASHREPORTER_DISABLE": "1"},
            )
        try:
            deadline = time.monotonic() + 30
            while True:
                found = re.search(
                    r"WebDriver BiDi listening on (ws://\S+)", self._log.read_text(errors="replace")
                )
                if found:
                    break
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise BrowserError(f"firefox-esr did not start:\n{self._log.read_text(errors='replace')}")
                time.sleep(0.05)  # polling its log with a deadline
            self.bidi = Bidi(found.group(1).rstrip("/") + "/session")
            self.bidi.send("session.new", {"capabilities": {"alwaysMatch": {"acceptInsecureCerts": True}}})
        except BaseException:
            self.close()
            raise

    def new_page(self, viewport: tuple[int, int] = VIEWPORT, java_script_enabled: bool = True) -> FirefoxPage:
        """A tab; one without scripts is in a firefox-esr of its own (``javascript.enabled``
        is a browser-wide pref, and 153 ESR lacks BiDi's emulation.setScriptingEnabled)."""
        if java_script_enabled:
            return FirefoxPage(self, viewport, sandbox=None)
        own = Firefox(prefs={"javascript.enabled": False})
        try:
            page = FirefoxPage(own, viewport, sandbox="camstream-tests", owns=own)
        except BaseException:
            own.close()
            raise
        return page

    def close(self) -> None:
        """Ends the session and the browser (its PID, killed if it does not exit)."""
        with contextlib.suppress(Exception):
            self.bidi.send("browser.close", {}, timeout_s=10)
        with contextlib.suppress(Exception):
            self.bidi.close()
        stop_process(self.proc)
        shutil.rmtree(self._dir, ignore_errors=True)


class FirefoxPage(ScriptPage):
    """A tab of its own user context (cookies and storage apart, like Playwright's context)."""

    def __init__(
        self, firefox: Firefox, viewport: tuple[int, int], sandbox: str | None, owns: Firefox | None = None
    ) -> None:
        super().__init__()
        self._owns = owns
        self._bidi = firefox.bidi
        self._user = self._bidi.send("browser.createUserContext", {})["userContext"]
        self.context = self._bidi.send("browsingContext.create", {"type": "tab", "userContext": self._user})[
            "context"
        ]
        width, height = viewport
        self._bidi.send(
            "browsingContext.setViewport",
            {"context": self.context, "viewport": {"width": width, "height": height}},
        )
        # With the page's scripts off, the tests' own run in a sandbox (a realm of their own).
        self._sandbox = sandbox
        self.synchronous = sandbox is not None

    def call(self, script: str, arg_json: str, timeout_s: float) -> str:
        target: dict[str, str] = {"context": self.context}
        if self._sandbox:
            target["sandbox"] = self._sandbox
        result = self._bidi.send(
            "script.callFunction",
            {
                "functionDeclaration": script,
                "arguments": [{"type": "string", "value": arg_json}],
                "target": target,
                "awaitPromise": not self.synchronous,
                "resultOwnership": "none",
            },
            timeout_s=timeout_s,
        )
        if result["type"] == "exception":
            details = result["exceptionDetails"]
            raise BrowserError(f"the page's script threw: {details.get('text')}")
        return result["result"]["value"]

    def goto(self, url: str) -> None:
        self._bidi.send("browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"})

    def add_init_script(self, script: str) -> None:
        self._bidi.send(
            "script.addPreloadScript",
            {"functionDeclaration": "() => {\n" + script + "\n}", "contexts": [self.context]},
        )

    def screenshot(self) -> bytes:
        data = self._bidi.send(
            "browsingContext.captureScreenshot", {"context": self.context, "origin": "viewport"}
        )
        return base64.b64decode(data["data"])

    def mouse_click(self, x: float, y: float) -> None:
        self._bidi.send(
            "input.performActions",
            {
                "context": self.context,
                "actions": [
                    {
                        "type": "pointer",
                        "id": "mouse",
                        "parameters": {"pointerType": "mouse"},
                        "actions": [
                            {"type": "pointerMove", "x": round(x), "y": round(y), "origin": "viewport"},
                            {"type": "pointerDown", "button": 0},
                            {"type": "pointerUp", "button": 0},
                        ],
                    }
                ],
            },
        )

    def key_press(self, key: str) -> None:
        self._bidi.send(
            "input.performActions",
            {
                "context": self.context,
                "actions": [
                    {
                        "type": "key",
                        "id": "keyboard",
                        "actions": [{"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}],
                    }
                ],
            },
        )

    def close(self) -> None:
        with contextlib.suppress(BrowserError):
            self._bidi.send("browsingContext.close", {"context": self.context})
        with contextlib.suppress(BrowserError):
            self._bidi.send("browser.removeUserContext", {"userContext": self._user})
        if self._owns is not None:
            self._owns.close()


# -- WebKitGTK through WebKitWebDriver and Selenium ----------------------------------
class Xvfb:
    """An X display of its own (``:N``, the first free one from 90 up), for MiniBrowser.

    Several test processes start displays at once (pytest-xdist's workers): a number
    that looked free may be taken a moment later, so the display is ours only once our
    own Xvfb says so (``-displayfd``: it writes the number when it accepts clients; one
    that finds the number taken exits instead, and the next number is tried)."""

    def __init__(self, size: tuple[int, int] = (1920, 1200)) -> None:
        if not os.path.exists(XVFB):
            raise BrowserError(f"{XVFB} is missing: run scripts/test.sh, which installs xvfb")
        for number in range(90, 190):
            if os.path.exists(f"/tmp/.X{number}-lock") or os.path.exists(f"/tmp/.X11-unix/X{number}"):
                continue
            proc = self._start(number, size)
            if proc is not None:
                self.display = f":{number}"
                self.proc = proc
                return
        raise BrowserError("no free X display number")

    @staticmethod
    def _start(number: int, size: tuple[int, int], timeout_s: float = 10.0) -> subprocess.Popen | None:
        """Xvfb on ``:number``, once it accepts clients; None if it exited (taken)."""
        read_end, write_end = os.pipe()
        screen = ["-screen", "0", f"{size[0]}x{size[1]}x24", "-nolisten", "tcp"]
        try:
            proc = subprocess.Popen(
                [XVFB, f":{number}", "-displayfd", str(write_end), *screen],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(write_end,),
            )
        finally:
            os.close(write_end)
        try:
            said = b""
            deadline = time.monotonic() + timeout_s
            while not said.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0:
                    stop_process(proc)
                    raise BrowserError(f"Xvfb :{number} did not start within {timeout_s} s")
                if select.select([read_end], [], [], left)[0]:
                    chunk = os.read(read_end, 64)
                    if not chunk:
                        break  # it exited without a word: the number is taken
                    said += chunk
        finally:
            os.close(read_end)
        if said.strip() == str(number).encode():
            return proc
        stop_process(proc)
        return None

    def close(self) -> None:
        stop_process(self.proc)


class WebKit:
    """An Xvfb display; each page is a WebKitWebDriver session (a MiniBrowser) of its own."""

    name = "webkit"

    def __init__(self) -> None:
        if not os.path.exists(WEBKIT_DRIVER):
            raise BrowserError(f"{WEBKIT_DRIVER} is missing: run scripts/test.sh, which installs it")
        self.xvfb = Xvfb()

    def new_page(
        self, viewport: tuple[int, int] = VIEWPORT, java_script_enabled: bool = True
    ) -> WebKitPage | WebKitScriptlessPage:
        if not java_script_enabled:
            return WebKitScriptlessPage(viewport)
        return WebKitPage(self.xvfb.display, viewport, java_script_enabled)

    def close(self) -> None:
        self.xvfb.close()


#: Deadlines of a request to WebKitWebDriver, in seconds: a new session (a MiniBrowser
#: starting; about a second), and any other (a page load's own limit is 30 s, a
#: script's is its timeout, which :meth:`WebKitPage.call` adds to this).
WEBKIT_SESSION_TIMEOUT_S = 30
WEBKIT_REQUEST_TIMEOUT_S = 60


class WebKitPage(ScriptPage):
    """A MiniBrowser window whose viewport is ``viewport`` CSS pixels."""

    def __init__(self, display: str, viewport: tuple[int, int], java_script_enabled: bool) -> None:
        super().__init__()
        from selenium import webdriver
        from selenium.webdriver.remote.client_config import ClientConfig
        from selenium.webdriver.remote.remote_connection import RemoteConnection
        from selenium.webdriver.webkitgtk.options import Options
        from selenium.webdriver.webkitgtk.service import Service

        options = Options()
        # The driver's process started here (Service), then a plain remote session to it:
        # selenium's WebKitGTK class warns of its own deprecated call.  Every request to
        # the driver has a deadline (none by default: a MiniBrowser that died starting
        # left its driver, and the test, waiting for ever); one session that does not
        # start in time is tried once more, with a driver of its own, then BrowserError.
        for attempt in (1, 2):
            self._service = Service(executable_path=WEBKIT_DRIVER, env={**os.environ, "DISPLAY": display})
            self._service.start()
            self._config = ClientConfig(
                remote_server_addr=self._service.service_url, timeout=WEBKIT_SESSION_TIMEOUT_S
            )
            try:
                connection = RemoteConnection(client_config=self._config)
                self.driver = webdriver.Remote(command_executor=connection, options=options)
                break
            except Exception as exc:
                self._service.stop()
                if attempt == 2:
                    raise BrowserError(f"WebKitWebDriver started no session: {exc!r}") from exc
            except BaseException:
                self._service.stop()
                raise
        self._config.timeout = WEBKIT_REQUEST_TIMEOUT_S
        try:
            self.driver.set_script_timeout(120)
            self.driver.set_page_load_timeout(30)
            self._init_scripts: list[str] = []
            self._proxies: dict[str, TestProxy] = {}
            self._size(viewport)
        except BaseException:
            self.close()
            raise

    def _size(self, viewport: tuple[int, int], timeout_s: float = 10.0) -> None:
        """Sizes the window so that its viewport (innerWidth x innerHeight) is ``viewport``:
        the window manager-less resize lands a moment later, so this polls with a deadline."""
        width, height = viewport
        self.driver.set_window_rect(0, 0, width, height)
        asked = None
        deadline = time.monotonic() + timeout_s
        while True:
            inner = self.driver.execute_script("return [window.innerWidth, window.innerHeight]")
            if inner == [width, height]:
                return
            if time.monotonic() > deadline:
                raise BrowserError(f"MiniBrowser's viewport is {inner}, not {list(viewport)}")
            rect = self.driver.get_window_rect()
            outer = (rect["width"] + width - inner[0], rect["height"] + height - inner[1])
            if outer != asked:
                self.driver.set_window_rect(0, 0, *outer)
                asked = outer
            time.sleep(0.05)  # polling the window's size with a deadline

    def call(self, script: str, arg_json: str, timeout_s: float) -> str:
        from selenium.common.exceptions import WebDriverException

        wrapper = (
            "const done = arguments[arguments.length - 1];"
            f"Promise.resolve(arguments[0]).then({script})"
            ".then((json) => done({ json }), (e) => done({ error: String((e && e.stack) || e) }));"
        )
        try:
            self.driver.set_script_timeout(timeout_s)
            self._config.timeout = max(WEBKIT_REQUEST_TIMEOUT_S, timeout_s + 30)
            result = self.driver.execute_async_script(wrapper, arg_json)
        except WebDriverException as exc:
            raise BrowserError(f"WebKitWebDriver: {exc.msg}") from exc
        finally:
            self._config.timeout = WEBKIT_REQUEST_TIMEOUT_S
        if result is None or "error" in result:
            raise BrowserError(f"the page's script threw: {result and result['error']}")
        return result["json"]

    def add_init_script(self, script: str) -> None:
        self._init_scripts.append(script)
        for proxy in self._proxies.values():
            proxy.init_script = "\n".join(self._init_scripts)

    def goto(self, url: str) -> None:
        """Loads ``url``; with init scripts, through a :class:`TestProxy` of its origin
        that adds them to every HTML page (so ``url`` names the proxy's port then)."""
        if self._init_scripts:
            parts = urllib.parse.urlsplit(url)
            proxy = self._proxies.get(parts.netloc)
            if proxy is None:
                proxy = TestProxy(parts.hostname, parts.port or 80, init_script="\n".join(self._init_scripts))
                self._proxies[parts.netloc] = proxy
            url = urllib.parse.urlunsplit(parts._replace(netloc=f"127.0.0.1:{proxy.port}"))
        self.driver.get(url)

    @property
    def url(self) -> str:
        return self.driver.current_url

    def screenshot(self) -> bytes:
        return self.driver.get_screenshot_as_png()

    def mouse_click(self, x: float, y: float) -> None:
        from selenium.webdriver.common.actions.action_builder import ActionBuilder

        actions = ActionBuilder(self.driver)
        actions.pointer_action.move_to_location(round(x), round(y)).click()
        actions.perform()

    def key_press(self, key: str) -> None:
        from selenium.webdriver.common.actions.action_builder import ActionBuilder

        actions = ActionBuilder(self.driver)
        actions.key_action.key_down(key).key_up(key)
        actions.perform()

    def close(self) -> None:
        """Ends the session (the driver ends its MiniBrowser; Selenium ends the driver's PID)."""
        try:
            self.driver.quit()
        finally:
            self._service.stop()
            for proxy in self._proxies.values():
                proxy.close()


# -- Chromium through Playwright -----------------------------------------------------
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Chromium:
    """Debian's Chromium under Playwright; each page has a browser context of its own.
    Playwright's sync API keeps an event loop marked running while it lives: start and
    close it within one test module (pytest-tornado's loop is in the others)."""

    name = "chromium"

    def __init__(self) -> None:
        if not os.path.exists(CHROMIUM):
            raise BrowserError(f"{CHROMIUM} is missing: run scripts/test.sh, which installs chromium")
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        try:
            self._browser = self._playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
        except BaseException:
            self._playwright.stop()
            raise

    def new_page(self, viewport: tuple[int, int] = VIEWPORT, java_script_enabled: bool = True):
        """Playwright's own page (``page.close()`` closes its context too)."""
        width, height = viewport
        context = self._browser.new_context(
            viewport={"width": width, "height": height}, java_script_enabled=java_script_enabled
        )
        page = context.new_page()
        page.close = context.close  # type: ignore[method-assign]
        return page

    def close(self) -> None:
        try:
            self._browser.close()
        finally:
            self._playwright.stop()


def launch(engine: str) -> Chromium | Firefox | WebKit:
    """The browser of ``engine`` (one of ENGINES), started; ``close()`` ends what it started."""
    return {"chromium": Chromium, "firefox": Firefox, "webkit": WebKit}[engine]()


class WebKitScriptlessPage:
    """A WebKitGTK page with JavaScript off: MiniBrowser run by itself (no driver)
    with ``--enable-javascript=false``, on an Xvfb display of the viewport's size.

    WebKitWebDriver 2.50 applies no MiniBrowser setting to the views of its
    session, so a page without scripts is one without the driver: it has
    ``goto`` and ``screenshot`` (the display, read through X) only, and no
    script may be run in it (``evaluate`` raises :class:`BrowserError`).  Tests
    that run on every engine read what such a page did from the server (its
    log) and from the picture.
    """

    def __init__(self, viewport: tuple[int, int]) -> None:
        if not os.path.exists(MINIBROWSER):
            raise BrowserError(f"{MINIBROWSER} is missing: run scripts/test.sh, which installs webkit2gtk")
        self.viewport = viewport
        self.xvfb = Xvfb(viewport)
        self.proc: subprocess.Popen | None = None
        self._url = "about:blank"

    def goto(self, url: str) -> None:
        """Opens ``url`` in a new MiniBrowser (the one before is ended); returns at once."""
        if self.proc is not None:
            stop_process(self.proc)
        self._url = url
        self.proc = subprocess.Popen(
            [MINIBROWSER, "--enable-javascript=false", "--full-screen", url],
            env={**os.environ, "DISPLAY": self.xvfb.display},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def url(self) -> str:
        return self._url

    def screenshot(self) -> bytes:
        """The whole display (PNG bytes): the page's window, at its top left."""
        from PIL import ImageGrab

        out = io.BytesIO()
        ImageGrab.grab(xdisplay=self.xvfb.display).save(out, "PNG")
        return out.getvalue()

    def evaluate(self, function: str, arg: Any = None, timeout_s: float = 60.0) -> Any:
        raise BrowserError("a WebKit page without JavaScript has no driver to run a script in")

    wait_for_function = evaluate

    def close(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.xvfb.close()


# -- a proxy that can refuse WebSockets and add a script to the pages --------------
INIT_PATH = "/__camstream_tests_init.js"


class TestProxy:
    """An HTTP proxy on a loopback port in front of ``host:port``, one thread per
    connection, each request on a connection of its own (``Connection: close``).

    ``refuse_websocket``: every WebSocket handshake is answered ``403``, as by a
    proxy that does not pass upgrades.  ``init_script``: every HTML page gets
    ``<script src="/__camstream_tests_init.js">`` first in its ``<head>`` (the
    pages' Content-Security-Policy allows only their own origin's scripts, which
    this is), so the script runs before any of the page's own."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, host: str, port: int, refuse_websocket: bool = False, init_script: str = "") -> None:
        self.target = (host, port)
        self.refuse_websocket = refuse_websocket
        self.init_script = init_script
        self.refused = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="test-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.add(sock)
        return sock

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(self._track(client),), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        opened = [client]
        try:
            head, rest = read_head(client)
            if head is None:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target = lines[0].split(" ")[:2]
            headers = [line for line in lines[1:] if line]
            upgrade = any(h.lower().startswith("upgrade:") and "websocket" in h.lower() for h in headers)
            if target.split("?")[0] == INIT_PATH:
                body = self.init_script.encode()
                client.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/javascript\r\nCache-Control: no-store\r\n"
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                return
            if upgrade and self.refuse_websocket:
                self.refused += 1
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            if not upgrade:
                drop = ("connection:", "accept-encoding:", "keep-alive:")
                headers = [h for h in headers if not h.lower().startswith(drop)] + ["Connection: close"]
            upstream = socket.create_connection(self.target, timeout=10)
            opened.append(self._track(upstream))
            upstream.settimeout(None)
            upstream.sendall(("\r\n".join([lines[0], *headers]) + "\r\n\r\n").encode("latin-1") + rest)
            if method == "GET" and not upgrade and self.init_script:
                self._pass_page(upstream, client)
            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
            pipe(upstream, client)
        except OSError:
            pass  # either side went away: the connection ends
        finally:
            for sock in opened:
                with self._lock:
                    self._sockets.discard(sock)
                sock.close()

    def _pass_page(self, upstream: socket.socket, client: socket.socket) -> None:
        """Passes the response's head on; an HTML page's body with the script added."""
        head, rest = read_head(upstream)
        if head is None:
            return
        text = head.decode("latin-1")
        if not re.search(r"(?im)^content-type:\s*text/html", text) or re.search(
            r"(?im)^transfer-encoding:", text
        ):
            client.sendall(head + rest)
            return
        found = re.search(r"(?im)^content-length:\s*(\d+)", text)
        length = int(found.group(1)) if found else None
        body = rest
        while length is None or len(body) < length:
            data = upstream.recv(65536)
            if not data:
                break
            body += data
        tag = f'<script src="{INIT_PATH}"></script>'.encode()
        body = re.sub(rb"(?i)<head>", lambda m: m.group(0) + tag, body, count=1)
        text = re.sub(r"(?im)^content-length:.*$", f"Content-Length: {len(body)}", text)
        client.sendall(text.encode("latin-1") + body)

    def close(self) -> None:
        """Stops listening and closes every connection it has open."""
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()


def read_head(sock: socket.socket) -> tuple[bytes | None, bytes]:
    """An HTTP head (through its blank line) and whatever came after it; None at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None, data
        data += chunk
    end = data.index(b"\r\n\r\n") + 4
    return data[:end], data[end:]


def pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copies ``source`` to ``sink`` until EOF; then ends ``sink``'s writing side."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
