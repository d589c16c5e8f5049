"""Sink building blocks without databases: rows, dedupe, line protocol, backoff, settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord

from streamapp.rules.temperature import TemperatureThresholds, new_state, record_reading, window_records
from streamapp.settings import SettingsError, load_settings
from streamapp.sinks import base as sinks_base
from streamapp.sinks.base import BACKOFF_CAP, Refusal, RowsRefused, SinkRow, SinkService, backoff_delay
from streamapp.sinks.influx import InfluxWriter, field_key, line_protocol, split_url, string_field, tag_value
from streamapp.sinks.postgres import alert_rows, alert_sink_rows, connect_kwargs, window_rows


def _record(value: Any, topic: str = "t", offset: int = 0) -> ConsumerRecord[bytes, bytes]:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return ConsumerRecord(topic, 0, offset, 0, 0, None, raw, None, 0, len(raw), [])


def _window(sensor: str, start: float, count: int) -> dict[str, Any]:
    return {"sensor_id": sensor, "start": start, "end": start + 60, "count": count,
            "min": 1.0, "max": 2.0, "mean": 1.5}  # fmt: skip


def test_window_rows_keep_the_newest_update_of_each_window() -> None:
    records = [_record(_window("a", 60, 3)), _record(_window("a", 60, 5)), _record(_window("a", 60, 4)),
               _record(_window("b", 60, 1)), _record(b"not json"), _record({"sensor_id": "c"})]  # fmt: skip
    rows = sorted(window_rows(records))
    assert rows == [("a", 60.0, 120.0, 5, 1.0, 2.0, 1.5), ("b", 60.0, 120.0, 1, 1.0, 2.0, 1.5)]


def test_alert_rows_once_per_alert_id() -> None:
    alert = {"alert_id": "x1", "kind": "high_temperature", "key": "s", "ts": 1.0, "window_start": 0,
             "window_end": 60, "value": 120, "threshold": 100, "detail": "hot"}  # fmt: skip
    rows = alert_rows(
        [_record(alert), _record(alert), _record({**alert, "alert_id": "x2", "window_start": None})]
    )
    assert [r[0] for r in rows] == ["x1", "x2"]
    assert rows[1][4] is None and rows[0][6] == 120.0


def test_line_protocol_escapes_tags_and_uses_the_window_start_in_seconds() -> None:
    text = line_protocol([("room 1,a=b", 120.0, 180.0, 3, 1.5, 2.0, 1.75)])
    assert text == (
        r"sensor_window,sensor_id=room\ 1\,a\=b count=3i,min=1.5,max=2.0,mean=1.75,window_end=180i 120"
    )


def test_influx_url_names_the_database() -> None:
    assert split_url("http://h:8086/metrics_db") == ("http://h:8086", "metrics_db")
    assert split_url("http://h:8086") == ("http://h:8086", "streamapp")


def test_postgres_keyword_dsn_becomes_arguments() -> None:
    assert connect_kwargs("postgresql://u@h/db") == {"dsn": "postgresql://u@h/db"}
    assert connect_kwargs("host=db port=5433 user=app password='s3 cret' dbname=x") == {
        "host": "db", "port": 5433, "user": "app", "password": "s3 cret", "database": "x",
    }  # fmt: skip


def test_backoff_doubles_up_to_the_cap() -> None:
    delays = [backoff_delay(n) for n in range(12)]
    assert 0.4 <= delays[0] <= 0.6 and 0.8 <= delays[1] <= 1.2 and 1.6 <= delays[2] <= 2.4
    assert max(delays) <= BACKOFF_CAP * 1.2 and delays[-1] >= BACKOFF_CAP * 0.8


def test_flow_control_settings_are_validated() -> None:
    settings = load_settings({"STREAMAPP_MAX_POLL_RECORDS": "100", "STREAMAPP_STREAM_BUFFER": "500"})
    assert (settings.max_poll_records, settings.stream_buffer) == (100, 500)
    with pytest.raises(SettingsError, match="STREAMAPP_MAX_POLL_RECORDS"):
        load_settings({"STREAMAPP_MAX_POLL_RECORDS": "200", "STREAMAPP_STREAM_BUFFER": "500"})
    with pytest.raises(SettingsError, match="STREAMAPP_STREAM_BUFFER"):
        load_settings({"STREAMAPP_STREAM_BUFFER": "0"})
    with pytest.raises(SettingsError, match="STREAMAPP_POSTGRES_DSN"):
        load_settings({"STREAMAPP_POSTGRES_DSN": "mysql://x@y/z"})


def test_window_records_are_what_the_view_shows() -> None:
    state = new_state()
    for ts, temperature in ((0.0, 10.0), (30.0, 20.0), (61.0, 5.0)):
        record_reading(state, "s", ts, temperature, TemperatureThresholds(), horizon=-1e9)
    assert window_records(state, "s", {0.0}) == [
        {"sensor_id": "s", "start": 0.0, "end": 60.0, "count": 2, "min": 10.0, "max": 20.0, "mean": 15.0}
    ]
    assert [r["start"] for r in window_records(state, "s", {0.0, 60.0})] == [0.0, 60.0]


# -- hostile data: line protocol, rows that cannot be rows, rows the database refuses ------------
@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("room 1", r"room\ 1"),
        ("a,b", r"a\,b"),
        ("a=b", r"a\=b"),
        ('say "hi"', r'say\ "hi"'),  # quotes need no escape in a tag
        ("a\\b", "a\\b"),  # InfluxDB 1.x keeps a backslash that escapes nothing
        ("a\\,b", "a\\\\,b"),  # the comma is escaped; the backslash before it stays
        ("tab\tcr\r", "tab\tcr\r"),
    ],
)
def test_tag_values_follow_the_influxdb_1x_line_protocol(value: str, escaped: str) -> None:
    assert tag_value(value) == escaped
    assert field_key(value) == escaped


@pytest.mark.parametrize(
    ("value", "reason"),
    [("", "empty"), ("a\nb", "newline"), ("ends\\", "backslash at the end")],
)
def test_tag_values_influxdb_cannot_carry_are_refused_with_the_reason(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        tag_value(value)


def test_string_fields_escape_backslashes_and_quotes_only() -> None:
    assert string_field('a"b\\c\nd, e=f') == '"a\\"b\\\\c\nd, e=f"'
    assert string_field("ends\\") == '"ends\\\\"'


def test_records_that_cannot_be_rows_are_refused_with_reasons_and_the_rest_goes_on() -> None:
    alert = {"alert_id": "x1", "kind": "k", "key": "s", "ts": 1.0, "value": 1, "threshold": 0}
    records = [
        _record(b"\xff not json", offset=0), _record({**alert, "ts": "soon"}, offset=1),
        _record({"kind": "k"}, offset=2), _record(alert, offset=3), _record([1, 2], offset=4),
    ]  # fmt: skip
    rows, refused = alert_sink_rows(records)
    assert [row.record.offset for row in rows] == [3]
    reasons = {record.offset: reason for record, reason in refused}
    assert reasons[0] == "sink: alert record is not a JSON object"
    assert "bad field" in reasons[1] and "soon" in reasons[1]
    assert reasons[2] == "sink: alert without field 'alert_id'"
    assert reasons[4] == "sink: alert record is not a JSON object"


def test_influx_rows_refuse_sensor_ids_line_protocol_cannot_carry() -> None:
    writer = InfluxWriter("http://127.0.0.1:1/db")
    records = [
        _record(_window('ok, ="x"', 60, 1), offset=0),
        _record(_window("new\nline", 60, 1), offset=1),
        _record({**_window("inf", 60, 1), "mean": "1e400"}, offset=2),
    ]
    rows, refused = writer.rows(records)
    assert [row.values[0] for row in rows] == [
        'sensor_window,sensor_id=ok\\,\\ \\="x" count=1i,min=1.0,max=2.0,mean=1.5,window_end=120i 60'
    ]
    assert sorted((r.offset, reason) for r, reason in refused) == [
        (1, "influx sink: InfluxDB line protocol cannot carry a newline in a tag"),
        (2, "influx sink: InfluxDB cannot store a non-finite number"),
    ]


class FakeWriter:
    """Refuses, as data, any batch holding a row with a NUL; fails ``outages`` times first."""

    name = "fake"

    def __init__(self, outages: int = 0) -> None:
        self.outages = outages
        self.written: list[str] = []
        self.calls = 0

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def rows(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> tuple[list[SinkRow], list[Refusal]]:
        rows: list[SinkRow] = []
        refused: list[Refusal] = []
        for record in records:
            if record.value == b"boom":
                raise RuntimeError("a bug in the row maker")
            rows.append(SinkRow(record, (orjson.loads(record.value)["id"],)))
        return rows, refused

    async def write(self, rows: Sequence[SinkRow]) -> int:
        self.calls += 1
        if self.outages:
            self.outages -= 1
            raise OSError("connection refused")
        if any("\x00" in row.values[0] for row in rows):
            raise RowsRefused('invalid byte sequence for encoding "UTF8": 0x00')
        self.written += [row.values[0] for row in rows]
        return len(rows)


def _service(
    writer: FakeWriter, monkeypatch: pytest.MonkeyPatch
) -> tuple[SinkService, list[tuple[int, str]]]:
    service = SinkService(writer, ["t"], load_settings({}))
    letters: list[tuple[int, str]] = []

    async def dead_letter(refused: list[Refusal]) -> bool:
        letters.extend((record.offset, reason) for record, reason in refused)
        return True

    monkeypatch.setattr(service, "_dead_letter", dead_letter)
    monkeypatch.setattr(sinks_base, "backoff_delay", lambda attempt: 0.0)
    return service, letters


async def test_a_row_refused_as_data_is_a_dead_letter_and_the_rest_of_the_batch_is_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer = FakeWriter()
    service, letters = _service(writer, monkeypatch)
    ids = ["a", "b\x00", "c", "d\x00", "e"]
    records = [_record({"id": i}, offset=n) for n, i in enumerate(ids)]
    assert await service._write(records) is True
    assert writer.written == ["a", "c", "e"]
    assert [offset for offset, _ in letters] == [1, 3]
    assert (
        letters[0][1]
        == 'fake sink: the database refused the row: invalid byte sequence for encoding "UTF8": 0x00'
    )


async def test_an_outage_while_writing_row_by_row_resumes_at_the_row_it_reached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer = FakeWriter()
    service, letters = _service(writer, monkeypatch)
    records = [_record({"id": i}, offset=n) for n, i in enumerate(["a", "b\x00", "c"])]
    original = writer.write

    async def flaky(rows: Sequence[SinkRow]) -> int:
        if writer.calls == 2:  # the first single row, after the refused batch
            writer.outages = 1
        return await original(rows)

    monkeypatch.setattr(writer, "write", flaky)
    assert await service._write(records) is True
    assert writer.written == ["a", "c"] and [offset for offset, _ in letters] == [1]


async def test_a_record_that_breaks_the_row_maker_is_a_dead_letter_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer = FakeWriter()
    service, letters = _service(writer, monkeypatch)
    records = [_record({"id": "a"}, offset=0), _record(b"boom", offset=1), _record({"id": "c"}, offset=2)]
    assert await service._write(records) is True
    assert writer.written == ["a", "c"]
    assert letters == [(1, "fake sink: internal error: RuntimeError: a bug in the row maker")]
