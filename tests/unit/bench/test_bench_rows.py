"""The bench's quix-full and spec-engine rows: the peer's account takeover, progress, and the ratios."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.contenders.apps.quix_full import PairedProgress, takeover
from bench.contenders.streamapp_spec import SPEC_FILE
from bench.harness import Metrics, Outcome, detections_progress, pipeline_progress, spec_progress
from bench.progress import ProgressFile, read_progress
from bench.scenarios.throughput import head_to_head
from streamapp.detections.spec import load_file
from streamapp.detections.testing import run
from streamapp.settings import Thresholds


class FakeState:
    """Quix's State as the stateful apply sees it: get with a default, set."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        # Quix hands out a decoded copy: so does this
        return json.loads(json.dumps(self.data[key])) if key in self.data else default

    def set(self, key: str, value: Any) -> None:
        self.data[key] = json.loads(json.dumps(value))


def test_quix_takeover_counts_a_failure_that_arrives_after_the_success_it_precedes() -> None:
    state = FakeState()
    for ts, success in ((10.0, False), (20.0, False), (40.0, True)):
        assert takeover({"ts": ts, "user": "eve", "success": success}, state) == []  # type: ignore[arg-type]
    found = takeover({"ts": 30.0, "user": "eve", "success": False}, state)  # type: ignore[arg-type]
    assert [(a["key"], a["ts"], a["value"]) for a in found] == [("eve", 40.0, 3)]


def test_quix_takeover_alerts_on_a_success_after_three_failures_within_five_minutes() -> None:
    state = FakeState()
    for ts in (10.0, 20.0, 30.0):
        assert takeover({"ts": ts, "user": "eve", "success": False}, state) == []  # type: ignore[arg-type]
    found = takeover({"ts": 40.0, "user": "eve", "success": True}, state)  # type: ignore[arg-type]
    assert [(a["key"], a["ts"], a["value"]) for a in found] == [("eve", 40.0, 3)]
    # the failures at 10 and 20 are more than 5 minutes before this one
    assert takeover({"ts": 315.0, "user": "eve", "success": True}, state) == []  # type: ignore[arg-type]


def test_quix_takeover_ignores_a_login_more_than_the_grace_behind_the_users_newest() -> None:
    state = FakeState()
    for ts, success in ((100.0, False), (110.0, False), (200.0, True)):
        assert takeover({"ts": ts, "user": "eve", "success": success}, state) == []  # type: ignore[arg-type]
    # 61 s behind the newest login: late, as streamapp's rule has it (grace 60 s)
    assert takeover({"ts": 139.0, "user": "eve", "success": False}, state) == []  # type: ignore[arg-type]
    found = takeover({"ts": 141.0, "user": "eve", "success": False}, state)  # type: ignore[arg-type]
    assert [(a["ts"], a["value"]) for a in found] == [(200.0, 3)]


def test_a_login_is_done_once_both_branches_handled_it(tmp_path: Path) -> None:
    path = tmp_path / "progress.json"
    paired = PairedProgress(ProgressFile(path, expect=2), source="logins")
    paired.processed("logins", 0, 0)
    paired.processed("logins", 0, 1)
    assert read_progress(path).count == 0  # timed from the first login, none done yet
    assert read_progress(path).first is not None
    paired.processed("repartition__g--user", 3, 0)
    paired.processed("repartition__g--user", 5, 0)
    progress = read_progress(path)
    assert (progress.count, progress.first_count, progress.done) == (2, 0, True)


def _metrics(**values: float) -> Metrics:
    names = {
        "ingested": ("streamapp_events_total", {"topic": "logins"}),
        "applied": ("streamapp_detection_events_total", {"detection": "brute_force"}),
        "late": ("streamapp_late_events_total", {"topic": "b-logins"}),
    }
    return {(names[k][0], frozenset(names[k][1].items())): v for k, v in values.items()}


def test_the_spec_row_is_done_when_every_failed_login_is_applied_or_late() -> None:
    half_done = _metrics(ingested=100, applied=15)
    assert spec_progress(half_done, "brute_force", "b-logins", 20) == (100, 5)
    done = _metrics(ingested=100, applied=18, late=2)
    assert spec_progress(done, "brute_force", "b-logins", 20) == (100, 0)


def test_a_row_of_several_detections_is_done_when_the_one_with_most_left_is() -> None:
    metrics = _metrics(ingested=100, applied=20)
    takeover = ("streamapp_detection_events_total", frozenset({("detection", "account_takeover")}))
    metrics[takeover] = 90.0
    both = {"brute_force": 20, "account_takeover": 100}
    assert detections_progress(metrics, both, "b-logins") == (100, 10)
    metrics[takeover] = 100.0
    assert detections_progress(metrics, both, "b-logins") == (100, 0)
    assert detections_progress(_metrics(ingested=100, applied=15), {"brute_force": 20}, "b-logins") == (
        100,
        5,
    )


def _round(name: str, rate: float | None) -> Outcome:
    return Outcome(name, rate=rate)


def test_head_to_head_is_the_median_of_ratios_taken_within_each_round() -> None:
    per_round = {
        "streamapp-full": [_round("full", 30.0), _round("full", 20.0), _round("full", None)],
        "quix-full": [_round("qf", 10.0), _round("qf", 20.0), _round("qf", 10.0)],
        "streamapp": [_round("sa", 50.0)],  # its peer did not run: no ratio
    }
    (versus,) = head_to_head(per_round)
    assert (versus.name, versus.other, versus.rounds) == ("full", "qf", [3.0, 1.0, None])
    assert versus.ratio == 2.0 and versus.met is True


def test_the_bench_spec_is_brute_force_with_the_contract_threshold() -> None:
    spec = load_file(SPEC_FILE)
    assert spec.data["condition"]["value"] == Thresholds().brute_force_failures
    failures = Thresholds().brute_force_failures
    # every field of a login (the bench's data has them): a spec on logins refuses what its ingest refuses
    login = {"ip": "203.0.113.9", "user": "ann"}
    burst = [{"ts": 1000.0 + i, **login, "success": False} for i in range(failures)]
    assert run(spec, burst).alerts == []  # not more than the threshold
    ok = {"ts": 1003.5, **login, "success": True}
    assert run(spec, [*burst, ok]).alerts == []  # a success is not counted
    alerts = run(spec, [*burst, {"ts": 1059.0, **login, "success": False}]).alerts
    assert [(a.kind, a.key, a.value) for a in alerts] == [("brute_force", "203.0.113.9", 6.0)]


def test_records_a_worker_sent_to_its_own_topic_and_has_not_handled_are_still_in_its_pipeline() -> None:
    metrics: Metrics = {
        ("streamapp_events_total", frozenset({("topic", "logins")})): 100.0,
        # faust's labels: "topic.<name>" for what it sent, "<name>" for what it received
        ("faust_topic_messages_sent_total", frozenset({("topic", "topic.app-detection-events")})): 100.0,
        ("faust_messages_received_per_topic_total", frozenset({("topic", "app-detection-events")})): 60.0,
    }
    assert pipeline_progress(metrics) == (100.0, 40.0)
