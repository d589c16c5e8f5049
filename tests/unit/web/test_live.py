"""The live page is one self-contained file: no build step, nothing fetched from elsewhere."""

from __future__ import annotations

import re
from importlib import resources


def test_live_page_is_self_contained_and_polls_the_api() -> None:
    html = resources.files("streamapp.web").joinpath("live.html").read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html>")
    # the SVG namespace is a name, not a fetch: the page draws its charts itself
    assert html.count('"http://www.w3.org/2000/svg"') == 1
    assert "://" not in html.replace('"http://www.w3.org/2000/svg"', ""), "nothing from another origin"
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html, re.IGNORECASE)
    assert "@import" not in html and "url(" not in html
    assert '"/alerts?limit=" + ALERT_LIMIT' in html and "ALERT_LIMIT = 50" in html
    assert '"/sensors?limit=200"' in html
    polling = re.search(r"POLL_MS = (\d+)", html)
    assert polling and 1000 <= int(polling.group(1)) <= 2000
    # data is put into the DOM as text, never parsed as HTML
    assert "innerHTML" not in html


def test_charts_make_bounded_requests() -> None:
    html = resources.files("streamapp.web").joinpath("live.html").read_text(encoding="utf-8")
    assert '"/alerts/per-minute?minutes=30"' in html and '"/stocks?limit=12"' in html
    # sparklines: only rows on screen are fetched, a bounded number per poll
    assert "IntersectionObserver" in html
    fetches = re.search(r"SPARK_FETCHES_PER_POLL = (\d+)", html)
    assert fetches and int(fetches.group(1)) <= 20


def test_alerts_per_minute_counts_by_kind_and_minute() -> None:
    from streamapp.web.live import alerts_per_minute

    now = 1_800_000_030.0  # 30 s into a minute
    alerts = [
        {"kind": "brute_force", "ts": now},
        {"kind": "brute_force", "ts": now - 5},
        {"kind": "brute_force", "ts": now - 61},
        {"kind": "amount_spike", "ts": now - 29 * 60},
        {"kind": "amount_spike", "ts": now - 31 * 60},  # before the 30 minutes
        {"kind": "card_velocity", "ts": "not a time"},
    ]
    rate = alerts_per_minute(alerts, now, 30)
    assert rate["minutes"] == 30 and rate["start"] == 1_800_000_060.0 - 30 * 60
    assert set(rate["kinds"]) == {"brute_force", "amount_spike"}
    assert rate["kinds"]["brute_force"][-1] == 2 and rate["kinds"]["brute_force"][-2] == 1
    assert sum(rate["kinds"]["brute_force"]) == 3
    assert rate["kinds"]["amount_spike"] == [1] + [0] * 29
