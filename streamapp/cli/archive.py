"""`streamapp archive run|ls` and `streamapp batch`: the Parquet archive on S3 and the batch check."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from streamapp.cli.common import (
    check_kafka_access,
    configure_logging,
    fail,
    load_or_exit,
    quiet_kafka_client,
    say,
)
from streamapp.ops.replay import ReplayError, parse_start_time
from streamapp.settings import Settings, SettingsError

__all__ = ["archive", "archive_store", "batch"]


@click.group()
def archive() -> None:
    """Keep every topic as Parquet on S3 (STREAMAPP_ARCHIVE_URL) and see what is kept."""


def archive_store(settings: Settings) -> Any:
    # pyarrow is optional (the archive extra): only the archive commands import it
    from streamapp.archive.store import ArchiveStore

    try:
        return ArchiveStore(settings)
    except SettingsError as exc:
        fail(str(exc))


@archive.command("run")
def archive_run() -> None:
    """Run the archiver until Ctrl-C or SIGTERM (it uploads what it holds before it exits)."""
    # pyarrow is optional (the archive extra): only the archive commands import it
    from streamapp.archive.archiver import Archiver

    configure_logging()
    quiet_kafka_client()
    settings = load_or_exit()
    check_kafka_access(settings)
    archiver = Archiver(settings, archive_store(settings), echo=say)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, archiver.stop)
        await archiver.run()

    asyncio.run(run())


@archive.command("ls")
@click.option("--topic", default=None, help="Only this topic (contract name, e.g. logins).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, one per object.")
def archive_ls(topic: str | None, as_json: bool) -> None:
    """What is archived: per topic and partition the objects, records, bytes and offset ranges."""
    # pyarrow is optional (the archive extra): only the archive commands import it
    from streamapp.archive.store import ArchiveUnavailable

    settings = load_or_exit()
    store = archive_store(settings)
    try:
        objects = store.objects(topic)
        counted = [(obj, store.rows(obj)) for obj in objects]
    except ArchiveUnavailable as exc:
        fail(str(exc), code=1)
    if as_json:
        for obj, rows in counted:
            click.echo(json.dumps({
                "topic": obj.topic, "partition": obj.partition, "date": obj.date, "first_offset": obj.first,
                "last_offset": obj.last, "records": rows, "bytes": obj.size, "path": f"s3://{obj.path}",
            }))  # fmt: skip
        return
    if not counted:
        click.echo(f"nothing archived under {store.url}" + (f" for topic {topic}" if topic else ""))
        return
    groups: dict[tuple[str, int], list[tuple[Any, int]]] = {}
    for obj, rows in counted:
        groups.setdefault((obj.topic, obj.partition), []).append((obj, rows))
    click.echo(f"{'topic':<16} {'part':>4} {'objects':>7} {'records':>10} {'bytes':>12}  offsets     dates")
    for (name, partition), items in sorted(groups.items()):
        objs = [o for o, _ in items]
        dates = sorted({o.date for o in objs})
        span = dates[0] if len(dates) == 1 else f"{dates[0]}..{dates[-1]}"
        click.echo(
            f"{name:<16} {partition:>4} {len(items):>7} {sum(r for _, r in items):>10,} "
            f"{sum(o.size for o in objs):>12,}  {objs[0].first}-{max(o.last for o in objs)}  {span}"
        )
    click.echo(
        f"total: {len(counted)} objects, {sum(r for _, r in counted):,} records, "
        f"{sum(o.size for o, _ in counted):,} bytes under {store.url}"
    )


@click.command()
@click.option("--since", required=True, metavar="TIME", help="Start (ISO-8601, epoch s).")
@click.option("--until", required=True, metavar="TIME", help="End, exclusive (same forms).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the report as JSON to FILE ('-': standard output).")  # fmt: skip
def batch(since: str, until: str, json_path: Path | None) -> None:
    """Recompute the detections over the archive and reconcile them with the stream's alerts.

    Exit 0 when both agree, 1 when an alert is in one and not the other.
    """
    # pyarrow is optional (the archive extra): only the archive commands import it
    from streamapp.archive.batch import reconcile
    from streamapp.archive.store import ArchiveUnavailable

    settings = load_or_exit()
    store = archive_store(settings)
    try:
        start, end = parse_start_time(since), parse_start_time(until)
    except ReplayError as exc:
        fail(str(exc).replace("--from", "--since/--until"))
    if end <= start:
        fail("--until must be after --since")
    try:
        result = reconcile(settings, store, start, end)
    except ArchiveUnavailable as exc:
        fail(str(exc), code=1)
    if json_path is not None:
        text = json.dumps(result.to_json(), indent=2)
        if str(json_path) == "-":
            click.echo(text)
        else:
            json_path.write_text(text + "\n")
    click.echo(result.summary(), err=str(json_path) == "-")
    sys.exit(0 if result.agrees else 1)
