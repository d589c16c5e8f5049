"""`streamapp replay` without a broker: --from parsing, the app id check, progress arithmetic."""

from __future__ import annotations

import re

import pytest

from streamapp.ops.replay import (
    Progress,
    ProgressMeter,
    ReplayError,
    ReplayTopics,
    check_new_app_id,
    held_settle_seconds,
    old_topics_pattern,
    parse_start_time,
    sink_groups,
    switch_over_hint,
)
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


def _progress(
    source: int, total: int, internal: int = 0, lag: int = 0, rate: float = 0.0, ready: bool = True
) -> Progress:
    return Progress(
        elapsed=12.0, source_done=source, source_total=total, internal_done=internal, internal_lag=lag,
        rate=rate, worker_ready=ready,
    )  # fmt: skip


def test_progress_counts_both_steps_and_estimates_the_by_entity_records() -> None:
    # half the source routed, making 6,000 by-entity records (1.2 each), 1,000 of them applied
    progress = _progress(5_000, 10_000, internal=1_000, lag=5_000, rate=1_000.0)
    assert progress.internal_total == 12_000
    assert progress.percent == pytest.approx(100 * 6_000 / 22_000)
    assert progress.eta == 16.0
    assert progress.describe() == (
        "replay  27.3%  source 5,000/10,000  by-entity 1,000/~12,000  1,000 records/s  ETA 16 s  12 s"
    )
    # once the source is done the by-entity total is exact
    finished = _progress(10_000, 10_000, internal=9_000, lag=2_500, rate=500.0)
    assert finished.internal_total == 11_500
    assert "by-entity 9,000/11,500" in finished.describe() and "ETA 5 s" in finished.describe()
    starting = _progress(0, 10_000, ready=False).describe()
    assert starting.endswith("ETA ?  12 s  (worker starting)")


def test_caught_up_needs_the_source_end_no_lag_and_a_ready_worker() -> None:
    assert _progress(10, 10, internal=12).caught_up
    assert not _progress(9, 10).caught_up
    assert not _progress(10, 10, lag=1).caught_up
    assert not _progress(10, 10, ready=False).caught_up
    assert _progress(0, 0).caught_up and _progress(0, 0).percent == 100.0


def test_meter_measures_the_rate_over_a_window_once_the_worker_is_ready() -> None:
    meter = ProgressMeter(source_total=1000, started=100.0, window=4.0)
    assert meter.update(102.0, 0, 0, 0, worker_ready=False).rate == 0.0
    assert meter.startup_seconds is None
    meter.update(105.0, 0, 0, 0, worker_ready=True)
    assert meter.startup_seconds == 5.0
    assert meter.update(107.0, 150, 50, 100, worker_ready=True).rate == 100.0  # both steps count
    # older samples leave the window: the rate follows the recent speed
    meter.update(109.0, 300, 100, 200, worker_ready=True)
    progress = meter.update(111.0, 340, 200, 140, worker_ready=True)
    assert progress.rate == pytest.approx((540 - 200) / 4.0)
    assert progress.elapsed == 11.0


def test_the_old_topics_pattern_matches_only_the_live_app_ids_own_topics() -> None:
    topics = ReplayTopics(
        source=("sa.logins",),
        internal=("sa-r1-detection-events",),
        owned=(
            "sa-r1-detection-events",
            "sa-r1-detection-events-changelog",
            "sa-r1-__assignor-__leader",
        ),  # fmt: skip
    )
    pattern = old_topics_pattern("sa.1", "sa-r1", topics)
    assert pattern == r"sa\.1-(detection-events|detection-events-changelog|__assignor-__leader)"
    for old in ("sa.1-detection-events", "sa.1-detection-events-changelog", "sa.1-__assignor-__leader"):
        assert re.fullmatch(pattern, old)
    for other in ("sa-r1-detection-events", "sax1-detection-events", "sa.1-logins", "sa.logins"):
        assert not re.fullmatch(pattern, other)


def test_the_switch_over_hint_deletes_the_live_app_ids_groups_and_its_sinks_groups() -> None:
    topics = ReplayTopics(
        source=("sa.logins",),
        internal=("sa-r1-detection-events",),
        owned=("sa-r1-detection-events", "sa-r1-sensor-windows", "sa-r1-__assignor-__leader"),
    )
    settings = load_settings({"STREAMAPP_APP_ID": "sa"})
    hint = switch_over_hint(settings, "sa-r1", topics)
    groups_line = next(line for line in hint.splitlines() if "kafka-consumer-groups.sh" in line)
    assert groups_line.split("--delete")[1].split() == [
        "--group", "sa", "--group", "sa-sink-postgres", "--group", "sa-sink-influx",
    ]  # fmt: skip
    assert sink_groups("sa") == ["sa-sink-postgres", "sa-sink-influx"]
    assert re.fullmatch(old_topics_pattern("sa", "sa-r1", topics), "sa-sensor-windows")


def test_the_replay_waits_the_grace_for_held_events_only_when_a_holding_rule_runs() -> None:
    # amount_spike and temperature_anomaly hold the newest events of a key until it is quiet for
    # the grace: a replay stopped at once would lose their alerts
    assert held_settle_seconds(Settings(grace_seconds=20.0)) == 25.0
    assert held_settle_seconds(Settings(grace_seconds=20.0, rules=frozenset({"amount_spike"}))) == 25.0
    assert held_settle_seconds(Settings(grace_seconds=20.0, rules=frozenset({"brute_force"}))) == 0.0
    assert held_settle_seconds(Settings(grace_seconds=0.0)) == 0.0
