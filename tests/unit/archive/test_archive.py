"""Archive settings, object names, the Parquet layout of records and the dev server's credentials."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord

from streamapp.archive.store import object_path, parse_object_path, records_table
from streamapp.dev.s3 import S3Credentials
from streamapp.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"STREAMAPP_ARCHIVE_URL": "http://bucket/x"}, "STREAMAPP_ARCHIVE_URL"),
        ({"STREAMAPP_ARCHIVE_URL": "s3://Bad_Bucket/x"}, "STREAMAPP_ARCHIVE_URL"),
        ({"STREAMAPP_ARCHIVE_ENDPOINT": "127.0.0.1:9000"}, "STREAMAPP_ARCHIVE_ENDPOINT"),
        ({"STREAMAPP_ARCHIVE_ACCESS_KEY": "k"}, "STREAMAPP_ARCHIVE_SECRET_KEY"),
        ({"STREAMAPP_ARCHIVE_ROLL_BYTES": "0"}, "STREAMAPP_ARCHIVE_ROLL_BYTES"),
        ({"STREAMAPP_ARCHIVE_ROLL_SECONDS": "-1"}, "STREAMAPP_ARCHIVE_ROLL_SECONDS"),
    ],
)
def test_bad_archive_settings_are_refused_naming_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings(env)


def test_archive_url_is_normalised() -> None:
    settings = load_settings({"STREAMAPP_ARCHIVE_URL": "s3://streamapp/archive/"})
    assert settings.archive_url == "s3://streamapp/archive"
    assert "secret" not in repr(load_settings({"STREAMAPP_ARCHIVE_ACCESS_KEY": "a",
                                               "STREAMAPP_ARCHIVE_SECRET_KEY": "secret"}))  # fmt: skip


def test_object_names_come_from_offsets_and_the_first_timestamp() -> None:
    path = object_path("b/p", "logins", 3, 100, 249, 1_767_225_599_000)  # 2025-12-31T23:59:59Z
    assert path == "b/p/topic=logins/date=2025-12-31/partition=3/100-249.parquet"
    obj = parse_object_path(path, 10)
    assert obj is not None and (obj.topic, obj.partition, obj.first, obj.last, obj.size) == (
        "logins", 3, 100, 249, 10,
    )  # fmt: skip
    assert parse_object_path("b/p/topic=logins/x.mpus-123") is None


def _record(offset: int, value: bytes | None, key: bytes | None = b"k") -> ConsumerRecord:
    return ConsumerRecord("t", 0, offset, 1_700_000_000_000 + offset, 0, key, value, None, 0, 0, ())


def test_records_table_keeps_fields_and_raw_values_of_anything() -> None:
    records = [
        _record(0, b'{"user": "a", "ts": 1.5, "success": true}'),
        _record(1, b'{"user": 7, "nested": {"x": 1}}'),
        _record(2, b"\xff not json", key=None),
        _record(3, None),
    ]
    table = records_table(records)
    assert table["kafka_offset"].to_pylist() == [0, 1, 2, 3]
    assert table["kafka_value"].to_pylist() == [r.value for r in records]
    assert table["user"].to_pylist() == ['"a"', "7", None, None]  # mixed types: JSON text
    assert table["ts"].to_pylist() == [1.5, None, None, None]
    assert table["nested"].to_pylist() == [None, '{"x":1}', None, None]


def test_dev_s3_credentials_are_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "s3" / "credentials.env"
    first = S3Credentials.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert S3Credentials.load_or_create(path) == first
    assert len(first.secret_key) >= 30
