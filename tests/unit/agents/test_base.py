"""The detector loop with fakes: typed events through a rule, alerts, states, late events, dead letters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agents.base import detect_batch
from streamapp.models import Login, encode_envelope
from streamapp.runtime.clock import worker_clock
from streamapp.settings import Settings
from streamapp.types import Envelope
from tests.unit.fakes import NOW, Faked, failed_logins_detector, faked, record

SETTINGS = Settings()
BY_IP = "app-failed-logins"


@pytest.fixture(autouse=True)
def clean_clock() -> Iterator[None]:
    worker_clock.newest = 0.0
    yield
    worker_clock.newest = 0.0


def _brute_force() -> Faked:
    return faked(failed_logins_detector(SETTINGS))


def _failed_login(offset: int, ts: float, ip: str = "10.0.0.1", raw: str | None = None) -> bytes:
    login = Login(ts=ts, ip=ip, user="ann", success=False)
    return encode_envelope(Envelope("logins", 3, offset, login, raw))


async def test_failed_logins_of_one_ip_alert_once_they_are_more_than_the_threshold() -> None:
    brute = _brute_force()
    failures = SETTINGS.thresholds.brute_force_failures + 1
    values = [_failed_login(n, NOW - 30 + n) for n in range(failures)]
    await detect_batch(
        [record(BY_IP, v, b"10.0.0.1", offset=n) for n, v in enumerate(values[:-1])], brute.detector
    )
    assert brute.alerts.alerts == []
    await detect_batch([record(BY_IP, values[-1], b"10.0.0.1", offset=failures)], brute.detector)
    assert [(a.kind, a.key) for a in brute.alerts.alerts] == [("brute_force", "10.0.0.1")]
    # one state write and one changelog record per batch; the event clock follows the events
    assert brute.store.state(b"10.0.0.1")["src"] == {"3": failures - 1}
    assert len(brute.out.to("t-unit-changelog")) == 2 and brute.store.clock_writes == [0, 0]
    assert worker_clock.newest == NOW - 30 + failures - 1


async def test_a_redelivered_source_record_counts_once() -> None:
    brute = _brute_force()
    failures = SETTINGS.thresholds.brute_force_failures + 1
    same = _failed_login(7, NOW - 10)
    await detect_batch(
        [record(BY_IP, same, b"10.0.0.1", offset=n) for n in range(failures * 2)], brute.detector
    )
    assert brute.alerts.alerts == []
    assert sum(n for _, n in brute.store.state(b"10.0.0.1")["buckets"]) == 1


async def test_an_event_behind_the_grace_goes_to_late_events_with_its_input_and_origin() -> None:
    brute = _brute_force()
    newest, late = (
        _failed_login(1, NOW - 5),
        _failed_login(2, NOW - 5 - SETTINGS.grace_seconds - 30, raw="{input}"),
    )
    await detect_batch([record(BY_IP, newest, b"10.0.0.1"), record(BY_IP, late, b"10.0.0.1")], brute.detector)
    [sent] = brute.out.to("late-events")
    assert sent.value == b"{input}"
    origin = [sent.header(f"x-source-{name}") for name in ("topic", "partition", "offset")]
    assert origin == [b"logins", b"3", b"2"]
    assert (sent.header("x-error") or b"").startswith(b"late event for t-unit: 9")
    assert sum(n for _, n in brute.store.state(b"10.0.0.1")["buckets"]) == 1


async def test_records_the_app_could_not_have_written_are_dead_letters_and_the_batch_goes_on() -> None:
    brute = _brute_force()
    forged = [
        record(BY_IP, b"not json", b"10.0.0.1", offset=1),
        record(BY_IP, _failed_login(2, NOW + 10**7), b"10.0.0.1", offset=2),  # from the future
        record(BY_IP, _failed_login(3, NOW - 5), b"__faust\x00offset__", offset=3),  # faust's own key
        record(BY_IP, _failed_login(4, NOW - 5), b"10.0.0.1", offset=4),
    ]
    await detect_batch(forged, brute.detector)
    dead = brute.out.to("dead-letters")
    assert [sent.header("x-source-offset") for sent in dead] == [b"3", b"1", b"2"]
    assert all((sent.header("x-error") or b"").startswith(b"record on an internal topic") for sent in dead)
    assert sum(n for _, n in brute.store.state(b"10.0.0.1")["buckets"]) == 1
    assert worker_clock.newest == NOW - 5
