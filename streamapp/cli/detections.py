"""`streamapp detections validate|test|apply|list|disable|diff`: detections as files, tried, then applied."""

from __future__ import annotations

import asyncio
import difflib
import json
from pathlib import Path
from typing import Any

import click
import orjson

from streamapp.detections.control import publish, read_applied, spec_json
from streamapp.detections.spec import SpecInvalid, load_file
from streamapp.detections.testing import run
from streamapp.settings import ALERT_KINDS, SettingsError, load_settings

__all__ = ["detections"]

_files = click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))


def _load_all(files: tuple[Path, ...]) -> list[Any]:
    """Every spec, or exit 1 after printing every error of every file (file:line: reason)."""
    specs, failed = [], False
    for path in files:
        try:
            specs.append(load_file(path))
        except SpecInvalid as exc:
            failed = True
            for error in exc.errors:
                click.echo(str(error), err=True)
    names = [spec.name for spec in specs]
    for name in {n for n in names if names.count(n) > 1}:
        failed = True
        click.echo(f"detection {name!r} is defined by more than one file", err=True)
    if failed:
        raise SystemExit(1)
    return specs


def _settings() -> Any:
    try:
        return load_settings()
    except SettingsError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(2) from None


@click.group()
def detections() -> None:
    """Detections as data: one YAML file each (docs/detections.md)."""


@detections.command("validate")
@_files
def validate(files: tuple[Path, ...]) -> None:
    """Check spec files against the schema; exit 1 with file, line and reason of every error."""
    for spec in _load_all(files):
        click.echo(f"{spec.name} version {spec.version}: valid")


@detections.command("test")
@click.argument("spec_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--events",
    "events_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON lines: one event per line, in arrival order.",
)
def test(spec_file: Path, events_file: Path) -> None:
    """Run a spec over a file of events offline; print the alerts it would raise (JSON lines)."""
    (spec,) = _load_all((spec_file,))
    events: list[Any] = []
    for number, line in enumerate(events_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except ValueError as exc:
            click.echo(f"{events_file}:{number}: not JSON: {exc}", err=True)
            raise SystemExit(1) from None
    outcome = run(spec, events)
    for alert in outcome.alerts:
        click.echo(alert.to_json().decode())
    for index, reason in outcome.invalid:
        click.echo(f"event {index + 1}: invalid: {reason}", err=True)
    for index, reason in outcome.late:
        click.echo(f"event {index + 1}: late: {reason}", err=True)
    click.echo(
        f"{len(outcome.alerts)} alerts from {len(events)} events "
        f"({len(outcome.invalid)} invalid, {len(outcome.late)} late)", err=True,
    )  # fmt: skip


def _pretty(data: Any) -> list[str]:
    return json.dumps(data, indent=2, sort_keys=True).splitlines(keepends=True)


def _change(old: Any, new: Any) -> str:
    if old is None:
        return "new"
    if old.to_json() == new.to_json():
        return "unchanged"
    return "changed, state kept" if old.shape == new.shape else "changed, state starts afresh"


@detections.command("apply")
@_files
def apply(files: tuple[Path, ...]) -> None:
    """Validate, then publish to the `detections` control topic (running workers pick it up)."""
    specs = _load_all(files)
    settings = _settings()
    applied = asyncio.run(read_applied(settings))
    records: list[tuple[str, bytes | None]] = []
    refused = False
    for spec in specs:
        old = applied.get(spec.name)
        change = _change(old, spec)
        if old is not None and change.startswith("changed") and spec.version <= old.version:
            click.echo(f"{spec.name}: changed but still version {spec.version}: raise its version "
                       f"(applied: {old.version})", err=True)  # fmt: skip
            refused = True
            continue
        click.echo(f"{spec.name} version {spec.version}: {change}")
        if change != "unchanged":
            records.append((spec.name, spec_json(spec)))
    if refused:
        raise SystemExit(1)
    if records:
        asyncio.run(publish(settings, records))


@detections.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(as_json: bool) -> None:
    """The detections applied (what the control topic holds)."""
    applied = asyncio.run(read_applied(_settings()))
    for name, spec in sorted(applied.items()):
        row = {
            "name": name,
            "version": spec.version,
            "severity": spec.data["severity"],
            "topic": spec.topic,
            "condition": spec.data["condition"]["type"],
        }
        text = f"{name}  version {spec.version}  {row['severity']}  {spec.topic}  {row['condition']}"
        click.echo(orjson.dumps(row).decode() if as_json else text)
    if not as_json:
        click.echo(f"{len(applied)} detections", err=True)


@detections.command("disable")
@click.argument("name")
def disable(name: str) -> None:
    """Stop a detection on every worker (a null record for its name)."""
    settings = _settings()
    # a shipped detection runs without being applied (streamapp.detections.shipped)
    if name not in ALERT_KINDS and name not in asyncio.run(read_applied(settings)):
        click.echo(f"no detection {name!r} is applied (nor shipped)", err=True)
        raise SystemExit(1)
    asyncio.run(publish(settings, [(name, None)]))
    click.echo(f"{name}: disabled")


@detections.command("diff")
@_files
def diff(files: tuple[Path, ...]) -> None:
    """What `apply` would change, as unified diffs of the specs (exit 1 when anything differs)."""
    specs = _load_all(files)
    applied = asyncio.run(read_applied(_settings()))
    differs = False
    for spec in specs:
        old = applied.get(spec.name)
        change = _change(old, spec)
        click.echo(f"{spec.name}: {change}")
        if change != "unchanged":
            differs = True
            before = _pretty(old.data) if old is not None else []
            click.echo("".join(difflib.unified_diff(before, _pretty(spec.data), f"applied/{spec.name}",
                                                    f"file/{spec.name}")), nl=False)  # fmt: skip
    raise SystemExit(1 if differs else 0)
