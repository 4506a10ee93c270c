"""A real browser on the review page: Debian's Chromium (``/usr/bin/chromium``, never a
Playwright download) driven by Playwright, the page served by uvicorn on a free port, and
axe-core (from the npm registry, ``.ci/run`` installs it under ``.cache/axe``) run in it.

Used by ``tests/web/test_browser.py`` and ``bench/bench_review_page.py``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from tests.support import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",  # the URGENT tone, checked in a test
]
REPO = Path(__file__).resolve().parents[2]
AXE = Path(os.environ.get("CXR_AXE_JS", REPO / ".cache/axe/node_modules/axe-core/axe.min.js"))
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


def artefacts() -> Path:
    """Where CI keeps the screenshots (``$CXR_ARTEFACTS``, else ``var/artefacts``)."""
    folder = Path(os.environ.get("CXR_ARTEFACTS", REPO / "var" / "artefacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """``app`` on uvicorn at a free localhost port, for the length of the block."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )


def log_in(page: Any, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/worklist")


def axe_violations(page: Any, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict]:
    """axe-core's violations of ``impacts`` on the page as it is now.

    The script is evaluated through the DevTools protocol (page.evaluate), which the page's
    CSP does not govern: the page itself still runs no inline or foreign script.
    """
    if not AXE.is_file():
        raise FileNotFoundError(
            f"{AXE} is missing: npm install --prefix .cache/axe axe-core@4 (.ci/run does)"
        )
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text())
    result = page.evaluate(
        "async () => JSON.stringify(await axe.run(document, {resultTypes: ['violations']}))"
    )
    violations = json.loads(result)["violations"]
    return [v for v in violations if v.get("impact") in impacts]


def describe(violations: list[dict]) -> str:
    return "\n".join(
        f"{v['id']} ({v['impact']}): {v['help']} - "
        + "; ".join(node["target"][0] if node["target"] else "?" for node in v["nodes"][:5])
        for v in violations
    )
