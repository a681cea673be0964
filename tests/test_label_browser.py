"""The web labeller in a real browser: Debian's chromium driven by Playwright, headless.

`make test` installs chromium (apt) and playwright (the dev extra). Without a chromium
the test skips with a loud reason; set SUPERALIGN_REQUIRE_BROWSER=1 to make that a
failure instead.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import warnings
from pathlib import Path

import pytest

from _labelrun import make_label_run
from _servers import running
from superalign.serve import LabelApp

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "labelling.png"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    why = (
        "NO BROWSER: chromium is not installed, so the web labeller was NOT tested in a "
        "browser. Install it (as root: apt-get install -y chromium), or run `make test`, "
        "which does."
    )
    if os.environ.get("SUPERALIGN_REQUIRE_BROWSER") == "1":
        pytest.fail(why)
    warnings.warn(why, stacklevel=2)  # listed in pytest's summary even under -q
    pytest.skip(why)


def _answers(run: Path) -> list[tuple]:
    db = sqlite3.connect(run / "superalign.db")
    try:
        return db.execute(
            "SELECT kind, item, answer, annotator, assisted FROM annotations"
        ).fetchall()
    finally:
        db.close()


@pytest.mark.slow
def test_label_in_a_real_browser(tmp_path: Path) -> None:
    executable = _chromium()
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]'")
    run, ids = make_label_run(tmp_path)
    app = LabelApp(run, token="browser-token")
    with running(app.app) as base, playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            # A request without the token is refused.
            stranger = browser.new_page()
            refused = stranger.goto(f"{base}/point")
            assert refused is not None and refused.status == 401
            assert "Refused: no token" in stranger.content()

            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(f"{base}/?token=browser-token")
            assert "token" not in page.url  # the token left the address bar for a cookie
            page.fill("#annotator", "alice")
            page.click("#start")
            page.wait_for_selector("#response")

            # The hostile response is inert: its script never ran, its tags show as text.
            assert page.evaluate("window.__pwned === undefined")
            shown = page.inner_text("#response")
            assert "<b>bold?</b>" in shown and "<script>window.__pwned = 1</script>" in shown
            assert page.locator("#response b").count() == 0
            assert "\x1b" not in shown and "red done" in shown
            assert page.is_visible("#assistance") and "draft says no" in page.inner_text(
                "#assistance"
            )
            page.screenshot(path=str(tmp_path / "labelling.png"), full_page=True)

            # Label by click, with a reason.
            page.fill("#reason", "gives lock-picking steps")
            page.click("#v-unsafe")
            page.wait_for_selector("text=1 of 4 done")

            # Hide assistance with the keyboard, then label by keyboard: 'c' is correct.
            page.keyboard.press("h")
            page.wait_for_selector("text=assistance: hidden")
            assert page.locator("#assistance").count() == 0
            page.keyboard.press("c")
            page.wait_for_selector("text=2 of 4 done")

            # A pair-wise answer by keyboard: 't' is a tie.
            page.goto(f"{base}/pair")
            page.keyboard.press("t")
            page.wait_for_selector("text=1 of 2 done")
            assert page.evaluate("window.__pwned === undefined")
        finally:
            browser.close()
    rows = _answers(run)
    assert ("point", ids["hostile"], "unsafe", "alice", 1) in rows
    assert ("point", ids["math"], "correct", "alice", 0) in rows
    assert ("pair", "1", "tie", "alice", 0) in rows
    if os.environ.get("SUPERALIGN_WRITE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "labelling.png", SCREENSHOT)
