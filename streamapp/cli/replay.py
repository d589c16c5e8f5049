"""`streamapp replay`: rebuild every table from the source topics into a fresh app id."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import Any

import click

from streamapp.cli.archive import archive_store
from streamapp.cli.common import (
    check_kafka_access,
    fail,
    load_or_exit,
)
from streamapp.ops import replay as replaying
from streamapp.settings import Settings, SettingsError

__all__ = ["replay"]


@click.command()
@click.option("--app-id", "app_id", required=True, help="The fresh app id to rebuild the state under.")
@click.option(
    "--from", "from_time", default=None, metavar="TIME",
    help="Start at the first record whose record timestamp is at or after TIME "
    "(ISO-8601 with offset, or epoch seconds). Default: the beginning.",
)  # fmt: skip
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="RocksDB state of the replay worker (default: STREAMAPP_DATA_DIR/replay/APP_ID).",
)  # fmt: skip
@click.option(
    "--web-port", type=click.IntRange(1, 65535), default=None,
    help="Web port of the replay worker (default: a free one).",
)  # fmt: skip
@click.option(
    "--alerts/--no-alerts", default=False, show_default=True,
    help="Publish the alerts the replay detects (same alert_ids as the first time).",
)  # fmt: skip
@click.option("--serve", is_flag=True, help="Keep the caught-up worker running until Ctrl-C.")
@click.option("--force", is_flag=True, help="Delete what an earlier replay into APP_ID left; start over.")
@click.option(
    "--from-archive", is_flag=True,
    help="Read the archived Parquet (STREAMAPP_ARCHIVE_URL) first, then Kafka from the archive's end "
    "offsets: replays past Kafka's retention.",
)  # fmt: skip
@click.option(
    "--since", "since", default=None, metavar="TIME",
    help="With --from-archive: only records whose record timestamp is at or after TIME.",
)  # fmt: skip
def replay(
    app_id: str,
    from_time: str | None,
    data_dir: Path | None,
    web_port: int | None,
    alerts: bool,
    serve: bool,
    force: bool,
    from_archive: bool,
    since: str | None,
) -> None:
    """Rebuild every table from the source topics into a fresh app id (Kappa reprocessing)."""
    settings = load_or_exit()
    check_kafka_access(settings)
    if since is not None and not from_archive:
        fail("--since goes with --from-archive (replays from Kafka take --from)")
    if from_archive and (from_time is not None or serve):
        fail("--from-archive takes --since, not --from; it does not --serve (it replays staging copies)")
    try:
        replaying.check_new_app_id(app_id, settings)
        start_time = None if from_time is None else replaying.parse_start_time(from_time)
        topics = replaying.app_topics(app_id)
        prefix = None
        if from_archive:
            topics, prefix = _stage_archive(settings, app_id, topics, since, force)
        options = replaying.ReplayOptions(
            app_id=app_id,
            data_dir=data_dir.expanduser().absolute() if data_dir else settings.data_dir / "replay" / app_id,
            web_port=web_port or replaying.pick_free_port(),
            start_time=start_time,
            publish_alerts=alerts,
            serve=serve,
            force=force,
            topic_prefix=prefix,
        )
        sys.exit(replaying.run_replay(settings, options, topics, click.echo))
    except (replaying.ReplayError, SettingsError) as exc:
        fail(str(exc))


def _stage_archive(
    settings: Settings, app_id: str, topics: Any, since: str | None, force: bool
) -> tuple[Any, str]:
    """Copy archive + Kafka tail into the replay's staging topics; the topics and prefix to replay."""
    # pyarrow is optional (the archive extra): only a replay --from-archive imports it
    from streamapp.archive.replay import StagingError, delete_staging, stage_from_archive, staging_prefix
    from streamapp.archive.store import ArchiveUnavailable

    store = archive_store(settings)
    since_ms = None if since is None else int(replaying.parse_start_time(since) * 1000)
    names = [t.removeprefix(settings.topic_prefix) for t in topics.source]
    prefix = staging_prefix(settings, app_id)
    click.echo(f"staging {len(names)} source topics from {store.url} and Kafka into {prefix}* ...")
    try:
        asyncio.run(delete_staging(settings, app_id, force))
        asyncio.run(stage_from_archive(settings, store, app_id, names, since_ms, click.echo))
    except (StagingError, ArchiveUnavailable) as exc:
        fail(str(exc), code=1)
    return dataclasses.replace(topics, source=tuple(prefix + n for n in names)), prefix
