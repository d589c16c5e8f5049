"""Event time: epoch seconds or ISO-8601 with an offset, else the record's timestamp."""

from __future__ import annotations

from streamapp.models.fields import event_time


def test_iso_time_with_offset_and_record_timestamp_fallback():
    assert event_time({"ts": "2023-11-14T22:13:20+00:00"}, None) == 1700000000.0
    assert event_time({"ts": "2023-11-14T23:13:20+01:00"}, None) == 1700000000.0
    assert event_time({}, 1700000001.25) == 1700000001.25
