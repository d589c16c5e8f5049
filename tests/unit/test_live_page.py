"""The live page is one self-contained file: no build step, nothing fetched from elsewhere."""

from __future__ import annotations

import re
from importlib import resources


def test_live_page_is_self_contained_and_polls_the_api() -> None:
    html = resources.files("streamapp").joinpath("live.html").read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert "://" not in html, "the page must not load anything from another origin"
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html, re.IGNORECASE)
    assert "@import" not in html and "url(" not in html
    assert '"/alerts?limit=" + ALERT_LIMIT' in html and "ALERT_LIMIT = 50" in html
    assert '"/sensors?limit=200"' in html
    polling = re.search(r"POLL_MS = (\d+)", html)
    assert polling and 1000 <= int(polling.group(1)) <= 2000
    # data is put into the DOM as text, never parsed as HTML
    assert "innerHTML" not in html
