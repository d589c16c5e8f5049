"""Records and stored states the app did not write: refused or replaced, never raised into the loop."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

import tables.base as tables_base
from agents.base import _apply_events
from agents.record_checks import envelope_problem, key_problem, stored_state
from agents.rejects import Rejects
from agents.store_users import forwarded_user
from streamapp.app import settings
from streamapp.models import InvalidEvent, parse_login
from streamapp.observability.metrics import STATE_RESETS_TOTAL
from streamapp.runtime.clock import worker_clock
from streamapp.runtime.consumer.changelog_restore import restore_changelogs
from tables.base import EVENT_CLOCK_KEY, expire_keys, restore_event_clock
from tests.unit.fakes import FakeSink, failed_logins_detector, faked

NOW = time.time()


@pytest.fixture(autouse=True)
def clean_clock() -> Iterator[None]:
    worker_clock.newest = 0.0
    yield
    worker_clock.newest = 0.0


def _record(value: bytes | None, key: bytes | None = b"10.0.0.1", offset: int = 7) -> ConsumerRecord:
    return ConsumerRecord(
        topic="app-failed-logins", partition=0, offset=offset, timestamp=int(NOW * 1000),
        timestamp_type=0, key=key, value=value, checksum=None, serialized_key_size=0,
        serialized_value_size=0, headers=(),
    )  # fmt: skip


def _envelope(offset: int, ts: float = NOW - 5, **fields: Any) -> bytes:
    login = {"ts": ts, "ip": "10.0.0.1", "user": "u", "success": False, **fields}
    return orjson.dumps({"src": [0, offset], "e": login})


def _resets(table: str) -> float:
    return STATE_RESETS_TOTAL.labels(table=table)._value.get()


@pytest.mark.parametrize(
    "key",
    [None, b"", b"\xff\xfe", b"__faust\x00streamapp-event-clock__", b"__faust\x00offset__", b"a\nb",
     b"x" * 257],
)  # fmt: skip
def test_keys_no_entity_can_have_are_refused(key: bytes | None) -> None:
    assert key_problem(key) is not None


def test_entity_keys_pass() -> None:
    assert key_problem("Zoë 🧑‍💻".encode()) is None
    assert key_problem(b"10.0.0.1") is None


@pytest.mark.parametrize(
    "value",
    [b"not json", b"[1,2]", b'{"e": {}}', b'{"src": [0], "e": {}}', b'{"src": [0, -1], "e": {}}',
     b'{"src": [0, true], "e": {}}', b'{"src": [0, 1], "e": []}'],
)  # fmt: skip
def test_envelopes_the_app_never_writes_are_refused(value: bytes) -> None:
    event, problem = envelope_problem(_record(value), parse_login, "logins")
    assert event is None and problem is not None and problem.startswith("record on an internal topic")


def test_a_forged_event_from_the_future_is_refused_like_input() -> None:
    event, problem = envelope_problem(_record(_envelope(1, ts=NOW + 86400 * 365)), parse_login, "logins")
    assert event is None and "ahead of the wall clock" in (problem or "")
    event, problem = envelope_problem(_record(_envelope(1, success="yes")), parse_login, "logins")
    assert event is None and "'success'" in (problem or "")


def test_a_forwarded_event_passes() -> None:
    event, problem = envelope_problem(_record(_envelope(3)), parse_login, "logins")
    assert problem is None and event is not None
    assert (event.topic, event.partition, event.offset, event.event.ip) == ("logins", 0, 3, "10.0.0.1")


@pytest.mark.parametrize("raw", [b"garbage", b"[]", b"42", b'"s"', b"null"])
def test_an_unreadable_stored_state_is_fresh_and_counted(raw: bytes) -> None:
    before = _resets("t-unit")
    assert stored_state(raw, "t-unit", b"k", NOW + 300) is None
    assert _resets("t-unit") == before + 1


def test_a_stored_state_with_a_clock_from_the_future_is_fresh() -> None:
    state = orjson.dumps({"buckets": [], "alerted": [], "clock": NOW + 86400})
    assert stored_state(state, "t-unit", b"k", NOW + 300) is None
    good = {"buckets": [], "alerted": [], "clock": NOW - 1}
    assert stored_state(orjson.dumps(good), "t-unit", b"k", NOW + 300) == good


def _apply_all(stored: Any, records: list[ConsumerRecord], isolate: bool) -> tuple[Any, Rejects]:
    detector = faked(failed_logins_detector(settings)).detector
    rejects = Rejects(FakeSink(), "logins", "t-unit", detector)
    state, _, _ = _apply_events(stored, b"10.0.0.1", records, detector=detector, rejects=rejects,
                                isolate=isolate)  # fmt: skip
    return state, rejects


def test_a_state_of_the_wrong_shape_is_replaced_and_the_events_count() -> None:
    broken = {"buckets": "not a list", "alerted": 5, "src": {}}
    records = [_record(_envelope(n), offset=n) for n in range(3)]
    with pytest.raises(Exception):  # noqa: B017 - the batch path raises, the loop isolates
        _apply_all(orjson.loads(orjson.dumps(broken)), records, isolate=False)
    before = _resets("t-unit")
    state, rejects = _apply_all(broken, records, isolate=True)
    assert sum(n for _, n in state["buckets"]) == 3
    assert rejects._dead == [] and _resets("t-unit") == before + 1


def test_forged_records_are_dead_letters_and_the_rest_count() -> None:
    records = [
        _record(_envelope(1), offset=1),
        _record(b"\x00\x01binary", offset=2),
        _record(_envelope(3, ts=NOW + 10**9), offset=3),
        _record(_envelope(4), offset=4),
    ]
    state, rejects = _apply_all(None, records, isolate=False)
    assert sum(n for _, n in state["buckets"]) == 2
    assert [r.offset for r, _, as_read in rejects._dead if as_read] == [2, 3]
    assert worker_clock.newest <= time.time() + 300  # the forged time did not move the clock


def test_a_forwarded_user_must_pass_the_users_parser() -> None:
    good = {"ts": NOW - 1, "name": "ann", "age": 30, "schema_id": 1, "fields": {"name": "ann", "age": 30}}
    assert forwarded_user(good, None).name == "ann"
    for bad in (
        {**good, "ts": NOW + 10**8},
        {**good, "ts": "soon"},
        {**good, "age": 31},
        {**good, "fields": {"name": "__faust\x00offset__", "age": 30}, "name": "__faust\x00offset__"},
        {**good, "fields": None},
    ):
        with pytest.raises(InvalidEvent):
            forwarded_user(bad, None)


class _FakeDB(dict):  # type: ignore[type-arg]
    """The part of a rocksdict partition store the clock and sweep use."""

    def put(self, key: bytes, value: bytes) -> None:
        self[key] = value

    def delete(self, key: bytes) -> None:
        self.pop(key, None)

    def items(self, from_key: bytes | None = None) -> Any:  # type: ignore[override]
        return sorted((k, v) for k, v in super().items() if from_key is None or k >= from_key)


def _fake_table(monkeypatch: pytest.MonkeyPatch, db: _FakeDB) -> Any:
    sent: list[tuple[int, bytes, bytes | None]] = []
    table = SimpleNamespace(
        name="t-clock",
        data=SimpleNamespace(_dbs={0: db}, _key_index={}),
        send_changelog=lambda partition, key, value, **_: sent.append((partition, key, value)),
        sent=sent,
    )
    monkeypatch.setattr(tables_base, "active_partitions", lambda t: iter([(0, db)]))
    return table


def test_a_poisoned_event_clock_is_ignored_and_rewritten_from_the_states(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = NOW - 30
    db = _FakeDB({
        EVENT_CLOCK_KEY: repr(NOW + 86400 * 365 * 60).encode(),  # 60 years ahead
        b"ip1": orjson.dumps({"last": real}),
        b"ip2": orjson.dumps({"last": NOW + 86400 * 365}),  # a state an older version took, ahead too
        b"ip3": b"not json",
    })  # fmt: skip
    table = _fake_table(monkeypatch, db)
    before = _resets("t-clock")
    restore_event_clock(table, lambda state: state["last"], settings.max_clock_skew_seconds)
    assert worker_clock.newest == real
    assert db[EVENT_CLOCK_KEY] == repr(real).encode()
    assert table.sent == [(0, EVENT_CLOCK_KEY, repr(real).encode())]
    warnings = [r.getMessage() for r in caplog.records if "event clock of table" in r.getMessage()]
    assert len(warnings) == 1 and "t-clock partition 0" in warnings[0]
    assert _resets("t-clock") == before + 1


def test_a_sane_event_clock_is_taken_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    db = _FakeDB({EVENT_CLOCK_KEY: repr(NOW - 10).encode(), b"ip1": orjson.dumps({"last": NOW - 50})})
    table = _fake_table(monkeypatch, db)
    restore_event_clock(table, lambda state: state["last"], settings.max_clock_skew_seconds)
    assert worker_clock.newest == NOW - 10 and table.sent == []


def test_an_unreadable_clock_with_no_state_is_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    db = _FakeDB({EVENT_CLOCK_KEY: b"{forged}"})
    table = _fake_table(monkeypatch, db)
    restore_event_clock(table, lambda state: state["last"], settings.max_clock_skew_seconds)
    assert worker_clock.newest == 0.0 and EVENT_CLOCK_KEY not in db
    assert table.sent == [(0, EVENT_CLOCK_KEY, None)]


async def test_the_sweep_removes_unreadable_states_and_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    worker_clock.newest = NOW
    db = _FakeDB({
        b"a": b"not json", b"b": orjson.dumps([1, 2]), b"c": orjson.dumps({"last": NOW - 10**6}),
        b"d": orjson.dumps({"last": NOW}),
    })  # fmt: skip
    table = _fake_table(monkeypatch, db)
    gone: list[tuple[int, bytes]] = []
    removed, _ = await expire_keys(
        table,
        lambda key, state: state["last"] <= worker_clock.horizon,
        removed=lambda p, k: gone.append((p, k)),
    )
    assert removed == 3 and list(db) == [b"d"]
    assert gone == [(0, b"a"), (0, b"b"), (0, b"c")]  # each told, so that what is kept of it goes too


async def test_the_restore_skips_changelog_records_without_a_key_or_with_faust_offset_key(
    tmp_path: Any,
) -> None:
    from collections import defaultdict

    import rocksdict
    from faust.types import TP

    db = rocksdict.Rdict(str(tmp_path / "p0.db"), options=rocksdict.Options(raw_mode=True))
    tp = TP("app-prices-by-symbol-changelog", 0)
    persisted: dict[TP, int] = {}
    store = SimpleNamespace(
        _db_for_partition=lambda partition: db, set_persisted_offset=persisted.__setitem__
    )
    recovery = SimpleNamespace(
        active_tps={tp}, standby_tps=set(), active_offsets={}, _active_events_received_at={},
        tp_to_table={tp: SimpleNamespace(data=store)}, in_recovery=False,
        tables=SimpleNamespace(standbys_ready=True),
    )  # fmt: skip
    monitor = SimpleNamespace(
        messages_received_total=0, messages_received_by_topic=defaultdict(int), tp_read_offsets={}
    )
    consumer = SimpleNamespace(app=SimpleNamespace(monitor=monitor, in_transaction=False))
    records = [
        _record(b"x", key=None, offset=0),
        _record(None, key=None, offset=1),
        _record(b"999999", key=b"__faust\x00offset__", offset=2),
        _record(b'{"buckets": []}', key=b"10.0.0.9", offset=3),
    ]
    await restore_changelogs(consumer, recovery, {tp: records})  # type: ignore[arg-type]
    assert db.get(b"10.0.0.9") == b'{"buckets": []}'
    assert db.get(b"__faust\x00offset__") is None  # faust's offset: the restore's own bookkeeping
    assert persisted == {tp: 3} and recovery.active_offsets == {tp: 3}
    db.close()
