"""Regenerate the README's screenshots (docs/*.png) in headless Chromium.

.venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
#: Four emulated cameras; the pages of one camera show the first.
CAMERAS = ("front", "porch", "garage", "yard")
PAGES = {
    "index.png": "cameras/front/",
    "viewer.png": "cameras/front/viewer?overlay=1",
    "kiosk.png": "cameras/front/kiosk",
    "cameras.png": "",
}
log = logging.getLogger("screenshots")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log_path = DOCS / ".screenshots-server.log"
    DOCS.mkdir(exist_ok=True)
    with open(log_path, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py"), "--port", "0"]
            + [arg for name in CAMERAS for arg in ("--camera", f"{name}=emulated")],
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )
    try:
        deadline = time.monotonic() + 20
        port = None
        while port is None and time.monotonic() < deadline:
            found = re.search(r"on http://127\.0\.0\.1:(\d+)/", log_path.read_text())
            port = found and int(found.group(1))
            time.sleep(0.05)
        if not port:
            raise RuntimeError("the server did not start")
        base = f"http://127.0.0.1:{port}/"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page(viewport={"width": 960, "height": 640})
            for name, path in PAGES.items():
                try:
                    urllib.request.urlopen(base + path, timeout=5).close()
                except urllib.error.HTTPError:
                    log.info("skipping %s: /%s does not exist", name, path)
                    continue
                page.goto(base + path)
                page.wait_for_timeout(1500)  # let a few frames arrive before the picture
                page.screenshot(path=DOCS / name)
                log.info("wrote docs/%s", name)
            browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        log_path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
