"""`streamapp replay` without a broker: --from parsing, the app id check, progress arithmetic."""

from __future__ import annotations

import pytest

from streamapp.replay import Progress, ProgressMeter, ReplayError, check_new_app_id, parse_start_time
from streamapp.settings import Settings, SettingsError, load_settings


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("1767225600", 1767225600.0),
        ("1767225600.25", 1767225600.25),
        ("2026-01-01T00:00:00+00:00", 1767225600.0),
        ("2026-01-01T00:00:00Z", 1767225600.0),
        ("2026-01-01T02:00:00+02:00", 1767225600.0),
        ("2026-01-01T00:00:00.500+00:00", 1767225600.5),
    ],
)
def test_start_time_is_epoch_seconds_or_iso_with_offset(text: str, epoch: float) -> None:
    assert parse_start_time(text) == epoch


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2026-01-01T00:00:00", "has no UTC offset"),
        ("yesterday", "neither epoch seconds nor ISO-8601"),
        ("-5", "neither epoch seconds nor ISO-8601"),
    ],
)
def test_start_time_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ReplayError, match=reason):
        parse_start_time(text)


def test_the_live_app_id_is_refused() -> None:
    live = Settings(app_id="streamapp")
    with pytest.raises(ReplayError, match="is the live app id .* e.g. --app-id streamapp-r1"):
        check_new_app_id("streamapp", live)
    check_new_app_id("streamapp-r1", live)


def test_publish_alerts_setting() -> None:
    assert load_settings({}).publish_alerts is True
    assert load_settings({"STREAMAPP_PUBLISH_ALERTS": "false"}).publish_alerts is False
    assert load_settings({"STREAMAPP_PUBLISH_ALERTS": "True"}).publish_alerts is True
    with pytest.raises(SettingsError, match="STREAMAPP_PUBLISH_ALERTS='maybe' is invalid: must be true"):
        load_settings({"STREAMAPP_PUBLISH_ALERTS": "maybe"})


def _progress(done: int, total: int, lag: int, rate: float, ready: bool = True) -> Progress:
    return Progress(
        elapsed=12.0, source_done=done, source_total=total, internal_lag=lag, internal_done=0, rate=rate,
        worker_ready=ready,
    )  # fmt: skip


def test_progress_line_percent_rate_eta() -> None:
    line = _progress(2_500, 10_000, 120, 500.0).describe()
    assert line == "replay  25.0%  2,500/10,000 records  500 records/s  ETA 15 s  by-entity lag 120  12 s"
    starting = _progress(0, 10_000, 0, 0.0, ready=False).describe()
    assert starting.endswith("ETA ?  by-entity lag 0  12 s  (worker starting)")
    assert "source done" in _progress(10_000, 10_000, 5, 0.0).describe()


def test_caught_up_needs_the_source_end_no_lag_and_a_ready_worker() -> None:
    assert _progress(10, 10, 0, 1.0).caught_up
    assert not _progress(9, 10, 0, 1.0).caught_up
    assert not _progress(10, 10, 1, 1.0).caught_up
    assert not _progress(10, 10, 0, 1.0, ready=False).caught_up
    assert _progress(0, 0, 0, 0.0).caught_up and _progress(0, 0, 0, 0.0).percent == 100.0


def test_meter_measures_the_rate_over_a_window_once_the_worker_is_ready() -> None:
    meter = ProgressMeter(source_total=1000, started=100.0, window=4.0)
    assert meter.update(102.0, 0, 0, 0, worker_ready=False).rate == 0.0
    assert meter.startup_seconds is None
    meter.update(105.0, 0, 0, 0, worker_ready=True)
    assert meter.startup_seconds == 5.0
    assert meter.update(107.0, 200, 0, 0, worker_ready=True).rate == 100.0
    # older samples leave the window: the rate follows the recent speed
    meter.update(109.0, 300, 0, 0, worker_ready=True)
    progress = meter.update(111.0, 340, 0, 0, worker_ready=True)
    assert progress.rate == pytest.approx((340 - 200) / 4.0)
    assert progress.elapsed == 11.0
