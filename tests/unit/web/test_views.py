"""Bounded list views: /sensors pages by cursor and reads a bounded number of keys; the alerts
tail skips records that are not alerts."""

from __future__ import annotations

import orjson
from prometheus_client import REGISTRY

from streamapp.web.live import (
    SensorPage,
    decode_cursor,
    encode_cursor,
    merge_pages,
    scan_sensors,
)
from streamapp.web.recent_alerts import RecentAlerts, parse_alert

NOW = 1_700_000_000.0


def _state(temperature: float) -> bytes:
    start = NOW - NOW % 60
    return orjson.dumps(
        {"windows": [[start, 1, temperature, temperature, temperature, temperature**2, False]],
         "last": [NOW, temperature]}
    )  # fmt: skip


def _partition(ids: list[str]) -> list[tuple[bytes, bytes]]:
    return sorted((i.encode(), _state(20.0)) for i in ids)


def _ids(page: SensorPage) -> list[str]:
    return [s["sensor_id"] for s in page.sensors]


def test_pages_walk_every_sensor_once_in_id_order() -> None:
    partitions = [_partition([f"s{n:03d}" for n in range(p, 250, 3)]) for p in range(3)]
    partitions[0].insert(0, (b"__faust\x00offset", b"12"))  # faust's bookkeeping: never listed
    seen, after = [], None
    for _ in range(10):
        page = scan_sensors(partitions, after, 40, NOW - 3600, "w1")
        seen += _ids(page)
        if page.next is None:
            break
        after = page.next
    assert seen == [f"s{n:03d}" for n in range(250)]


def test_a_request_reads_a_bounded_number_of_keys_whatever_the_table_size() -> None:
    expired = [(f"old{n:06d}".encode(), _state(1.0)) for n in range(100_000)]
    read = 0

    def counted():
        nonlocal read
        for item in expired:
            read += 1
            yield item

    page = scan_sensors([counted()], None, 10, NOW + 10 * 3600, "w1", budget=500)
    assert page.sensors == [] and read <= 501
    assert page.next == b"old000499"  # the next request goes on from there


def test_unreadable_states_are_skipped_not_fatal() -> None:
    partition = [
        (b"a", b"{not json"),
        (b"b", b"[1, 2]"),
        (b"c", orjson.dumps({"windows": 3})),
        (b"d", _state(5.0)),
    ]
    assert _ids(scan_sensors([partition], None, 10, NOW - 3600, "w1")) == ["d"]


def test_a_spec_s_states_are_listed_by_their_own_clock_and_shape_only() -> None:
    # a running temperature spec's states (the rule's, with the engine's shape and the sensor's
    # clock): shown for the retention behind the sensor's own clock too, not only the worker's
    def spec_state(temperature: float, shape: str, clock: float) -> bytes:
        return orjson.dumps({**orjson.loads(_state(temperature)), "shape": shape, "clock": clock})

    partition = [
        (b"a", spec_state(20.0, "v1", NOW)),
        (b"b", spec_state(21.0, "v0", NOW)),  # an older version's shape: not what runs
        (b"c", spec_state(22.0, "v1", NOW + 7200)),  # its own clock is 2 h on: the window is gone
    ]
    page = scan_sensors([partition], None, 10, NOW - 3600, "w1", shape="v1")
    assert _ids(page) == ["a"]
    assert page.sensors[0]["last"] == {"ts": NOW, "temperature": 20.0}


def test_pages_of_several_workers_merge_without_losing_or_repeating_a_sensor() -> None:
    def sensor(i: str) -> dict:
        return {"sensor_id": i}

    full = SensorPage([sensor("a"), sensor("c")], b"c")  # stopped at its limit: more after c
    done = SensorPage([sensor("b"), sensor("d"), sensor("e")], None)
    page = merge_pages([full, done], 10)
    assert _ids(page) == ["a", "b", "c"] and page.next == b"c"  # d, e come on the next page
    page = merge_pages([SensorPage([sensor("a")], None), done], 2)
    assert _ids(page) == ["a", "b"] and page.next == b"b"
    assert merge_pages([SensorPage([], None), SensorPage([], None)], 5) == SensorPage([], None)


def test_cursors_round_trip_and_junk_is_refused() -> None:
    for key in (b"", b"sensor-1", "s\u00e9nsor/?&=".encode(), bytes(range(256))):
        assert decode_cursor(encode_cursor(key)) == key
    for junk in ("!!!", "a" * 5000, "=abc"):
        try:
            decode_cursor(junk)
        except ValueError:
            continue
        raise AssertionError(f"{junk!r} taken for a cursor")


def test_the_alerts_tail_keeps_alerts_and_skips_anything_else_counted() -> None:
    good = {"alert_id": "x", "kind": "brute_force", "key": "1.2.3.4", "ts": NOW, "detail": ""}
    bad = [None, b"", b"{bad", b"[]", b"1", b'"s"', orjson.dumps({"kind": "k", "key": "x"}),
           orjson.dumps({**good, "ts": "soon"}), orjson.dumps({**good, "ts": True}),
           orjson.dumps({**good, "kind": None}), orjson.dumps({**good, "key": 5}),
           b'{"kind":"k","key":"x","ts":1e999}']  # fmt: skip
    assert parse_alert(orjson.dumps(good)) == good
    tail = RecentAlerts(capacity=100)
    before = REGISTRY.get_sample_value("streamapp_skipped_alerts_total") or 0.0
    for value in bad:
        assert parse_alert(value) is None, value
        assert tail.add(value, "alerts[0]@1") is False
    assert tail.add(orjson.dumps(good)) is True
    assert REGISTRY.get_sample_value("streamapp_skipped_alerts_total") == before + len(bad)
    # queries keep working: nothing unreadable was kept
    assert tail.query("brute_force", None, 10) == [good] and tail.query(None, "nobody", 10) == []
