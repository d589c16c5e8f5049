"""The archive's object store: Parquet objects named by topic, date, partition and offset range on S3."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from streamapp.archive.columns import META_COLUMNS, parquet_options, records_table
from streamapp.settings import PREFIX, Settings, SettingsError

__all__ = [
    "ARCHIVED_TOPICS",
    "META_COLUMNS",
    "ArchiveObject",
    "ArchiveStore",
    "ArchiveUnavailable",
    "concat_tables",
    "object_path",
    "parse_object_path",
    "records_table",
]

#: contract names of the topics the archiver keeps: the inputs, then what the app writes
ARCHIVED_TOPICS = (
    "logins", "sensor-readings", "transactions", "stock-prices", "users",
    "alerts", "dead-letters", "late-events",
)  # fmt: skip

_OBJECT = re.compile(
    r"topic=(?P<topic>[^/]+)/date=(?P<date>\d{4}-\d{2}-\d{2})/partition=(?P<partition>\d+)/"
    r"(?P<first>\d+)-(?P<last>\d+)\.parquet$"
)


class ArchiveUnavailable(RuntimeError):
    """The object store did not answer or refused a call; the message is one line."""


@dataclass(frozen=True, order=True)
class ArchiveObject:
    """One archived object: the records of one partition from ``first`` to ``last`` offset."""

    topic: str
    partition: int
    first: int
    last: int
    date: str
    path: str
    size: int


def object_path(prefix: str, topic: str, partition: int, first: int, last: int, first_ms: int) -> str:
    """``<prefix>/topic=<t>/date=<yyyy-mm-dd>/partition=<p>/<first>-<last>.parquet``.

    The date is the UTC day of the first record's timestamp: the name is a function of the
    records alone, so a crash that uploads the same range again writes the same object.
    """
    day = datetime.fromtimestamp(first_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
    return f"{prefix}/topic={topic}/date={day}/partition={partition}/{first}-{last}.parquet"


def parse_object_path(path: str, size: int = 0) -> ArchiveObject | None:
    """The object a path names, or None for anything else (e.g. an unfinished multipart upload)."""
    found = _OBJECT.search(path)
    if found is None:
        return None
    return ArchiveObject(
        topic=found["topic"], partition=int(found["partition"]), first=int(found["first"]),
        last=int(found["last"]), date=found["date"], path=path, size=size,
    )  # fmt: skip


def concat_tables(tables: Sequence[pa.Table]) -> pa.Table:
    """One table of objects whose event columns may differ (a field seen as a number in one object
    and as text in another becomes text everywhere); missing columns are null."""
    types: dict[str, set[pa.DataType]] = {}
    for table in tables:
        for schema_field in table.schema:
            types.setdefault(schema_field.name, set()).add(schema_field.type)
    mixed = {name for name, seen in types.items() if len({t for t in seen if not pa.types.is_null(t)}) > 1}
    if mixed:
        tables = [_text_columns(table, mixed) for table in tables]
    return pa.concat_tables(tables, promote_options="permissive")


def _text_columns(table: pa.Table, names: set[str]) -> pa.Table:
    for name in names:
        if name in table.column_names:
            index = table.schema.get_field_index(name)
            table = table.set_column(index, name, table[name].cast(pa.string()))
    return table


class ArchiveStore:
    """Parquet objects under ``s3://bucket/prefix`` through pyarrow's S3 filesystem."""

    def __init__(self, settings: Settings) -> None:
        if not settings.archive_url:
            raise SettingsError(f"{PREFIX}ARCHIVE_URL is required (e.g. s3://streamapp/archive)")
        # S3Proxy and other S3-compatible servers refuse the SDK's default request checksums
        os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "WHEN_REQUIRED")
        os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "WHEN_REQUIRED")
        bucket_and_prefix = settings.archive_url.removeprefix("s3://")
        self.bucket, _, prefix = bucket_and_prefix.partition("/")
        self.root = f"{self.bucket}/{prefix}".rstrip("/")
        self.url = settings.archive_url
        kwargs: dict[str, Any] = {
            "region": settings.archive_region,
            "connect_timeout": 5.0,
            "request_timeout": 30.0,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=2),
        }
        if settings.archive_access_key:
            kwargs.update(access_key=settings.archive_access_key, secret_key=settings.archive_secret_key)
        if settings.archive_endpoint:
            scheme, _, host = settings.archive_endpoint.partition("://")
            kwargs.update(endpoint_override=host, scheme=scheme)
        self.fs = pafs.S3FileSystem(**kwargs)

    def _call(self, what: str, func: Any, *args: Any) -> Any:
        try:
            return func(*args)
        except (OSError, pa.ArrowException) as exc:
            reason = " ".join(str(exc).split())[:300]
            raise ArchiveUnavailable(f"archive {self.url}: {what} failed: {reason}") from None

    def ensure_bucket(self) -> None:
        """Make the bucket when there is none (a fresh S3Proxy or MinIO); an existing one is left alone."""
        info = self._call(f"looking up bucket {self.bucket}", self.fs.get_file_info, self.bucket)
        if info.type == pafs.FileType.NotFound:
            self._call(f"creating bucket {self.bucket}", self.fs.create_dir, self.bucket)

    def put(self, path: str, table: pa.Table) -> int:
        """Upload ``table`` as one Parquet object (a single PUT of the finished bytes); its size."""
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, **parquet_options(table.schema))
        data = sink.getvalue()

        def upload() -> None:
            with self.fs.open_output_stream(path) as out:
                out.write(data)

        self._call(f"upload of {path}", upload)
        return len(data)

    def objects(self, topic: str | None = None) -> list[ArchiveObject]:
        """Every archived object (of ``topic``), sorted by topic, partition and offsets."""
        base = f"{self.root}/topic={topic}" if topic else self.root
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        infos = self._call(f"listing {base}", self.fs.get_file_info, selector)
        found = (
            parse_object_path(info.path, info.size or 0) for info in infos if info.type == pafs.FileType.File
        )
        return sorted(obj for obj in found if obj is not None and (topic is None or obj.topic == topic))

    def read(self, obj: ArchiveObject, columns: Iterable[str] | None = None) -> pa.Table:
        """The records of one object."""

        def read() -> pa.Table:
            with self.fs.open_input_file(obj.path) as source:
                return pq.read_table(source, columns=list(columns) if columns is not None else None)

        return self._call(f"reading {obj.path}", read)

    def rows(self, obj: ArchiveObject) -> int:
        """The number of records in one object (from its Parquet footer)."""

        def count() -> int:
            with self.fs.open_input_file(obj.path) as source:
                return int(pq.ParquetFile(source).metadata.num_rows)

        return int(self._call(f"reading {obj.path}", count))

    def delete(self, obj: ArchiveObject) -> None:
        self._call(f"deleting {obj.path}", self.fs.delete_file, obj.path)
