"""`streamapp worker`: a Faust worker of the app."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from streamapp.cli.common import check_kafka_access, check_replication, fail, load_or_exit, say
from streamapp.detections.shipped import shipped_specs
from streamapp.runtime.transactions import discard_state_after_unclean_stop, mark_clean_stop
from streamapp.settings import SettingsError

__all__ = ["worker"]


def _export_options(web_port: int | None, data_dir: Path | None) -> None:
    """The worker's options as the settings they override: the app reads them when it is imported."""
    if web_port is not None:
        os.environ["STREAMAPP_WEB_PORT"] = str(web_port)
    if data_dir is not None:
        os.environ["STREAMAPP_DATA_DIR"] = str(data_dir.expanduser().absolute())


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--web-port", type=int, help="Web API port (default STREAMAPP_WEB_PORT or 6066).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="RocksDB state directory.")
@click.option("--loglevel", "-l", default=None, help="Log level (default STREAMAPP_LOG_LEVEL).")
def worker(web_port: int | None, data_dir: Path | None, loglevel: str | None) -> None:
    """Run a Faust worker (same app as `faust -A streamapp.app worker`)."""
    _export_options(web_port, data_dir)
    try:  # a setting the shipped specs refuse stops the worker before it starts
        shipped_specs(load_or_exit())
    except SettingsError as exc:
        fail(str(exc))
    check_kafka_access(load_or_exit())
    check_replication(load_or_exit())
    # streamapp.app builds the app from the environment when imported: only once the options are in it
    from streamapp.app import app, import_app_modules, settings

    import_app_modules()
    # faust creates the data dir without its parents (`--data-dir data/w1` on a fresh clone)
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    level = loglevel or settings.log_level
    logging.getLogger("streamapp").setLevel(level.upper())
    # JSON logs: every console line is a JSON object, so no startup banner (faust's --quiet)
    quiet = ["--quiet"] if settings.log_format == "json" else []
    # faust's worker spells "warning" as "warn"
    sys.argv = ["streamapp", *quiet, "worker", "--loglevel", {"warning": "warn"}.get(level, level)]
    exactly_once = settings.processing_guarantee == "exactly_once"
    if exactly_once and discard_state_after_unclean_stop(settings.data_dir):
        say("streamapp: the last stop was not clean: tables are rebuilt from the changelogs")
    try:
        app.main()
    except SystemExit as exc:
        if exactly_once and exc.code in (0, None):
            mark_clean_stop(settings.data_dir)
        raise
