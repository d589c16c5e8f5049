"""Sink building blocks without databases: rows, dedupe, line protocol, backoff, settings."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord

from streamapp.rules.temperature import TemperatureThresholds, new_state, record_reading, window_records
from streamapp.settings import SettingsError, load_settings
from streamapp.sinks.base import BACKOFF_CAP, backoff_delay
from streamapp.sinks.influx import line_protocol, split_url
from streamapp.sinks.postgres import alert_rows, connect_kwargs, window_rows


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
