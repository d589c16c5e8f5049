"""`streamapp dlq list|resubmit`: inspect dead letters and re-submit chosen ones."""

from __future__ import annotations

import asyncio

import click
import orjson

from streamapp.cli.common import (
    check_kafka_access,
    fail,
    load_or_exit,
    quiet_kafka_client,
    say,
)
from streamapp.ops.dlq import DeadLetterError, read_dead_letters, resubmit

__all__ = ["dlq"]


@click.group()
def dlq() -> None:
    """Inspect dead letters and re-submit chosen ones to their source topic."""
    quiet_kafka_client()


@dlq.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Newest N only.")
@click.option("--topic", default=None, help="Only dead letters from this source topic (e.g. users).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def dlq_list(limit: int, topic: str | None, as_json: bool) -> None:
    """List dead letters, oldest first, with their reasons and where they came from."""
    settings = load_or_exit()
    check_kafka_access(settings)
    try:
        letters = asyncio.run(read_dead_letters(settings, source_topic=topic, limit=limit))
    except DeadLetterError as exc:
        fail(str(exc), code=1)
        return
    for letter in letters:
        click.echo(orjson.dumps(letter.summary()).decode() if as_json else letter.describe())
    say(f"{len(letters)} dead letters" + (f" from {topic}" if topic else ""))


@dlq.command("resubmit")
@click.option("--offset", "offsets", type=int, multiple=True, help="Dead-letter offset (repeatable).")
@click.option("--partition", type=int, default=None, help="Dead-letters partition of --offset.")
@click.option("--all", "resubmit_all", is_flag=True, help="Every dead letter (of --topic, if given).")
@click.option("--topic", default=None, help="Only dead letters from this source topic.")
def dlq_resubmit(
    offsets: tuple[int, ...], partition: int | None, resubmit_all: bool, topic: str | None
) -> None:
    """Re-submit dead letters byte-for-byte (key, value, original headers) to their source topic."""
    if resubmit_all == bool(offsets):
        fail("say which: --offset O [--partition P] (see `streamapp dlq list`), or --all")
    settings = load_or_exit()
    check_kafka_access(settings)
    positions = None if resubmit_all else [(partition, o) for o in offsets]
    try:
        letters = asyncio.run(read_dead_letters(settings, source_topic=topic, positions=positions))
        if positions is not None:
            found = {(letter.partition, letter.offset) for letter in letters}
            missing = [o for p, o in positions if not any(o == fo and p in (None, fp) for fp, fo in found)]
            if missing:
                fail(f"no dead letter at offset {', '.join(map(str, missing))}"
                      + (f" of partition {partition}" if partition is not None else ""), code=1)  # fmt: skip
            by_offset: dict[int, list[int]] = {}
            for fp, fo in found:
                by_offset.setdefault(fo, []).append(fp)
            ambiguous = {o: ps for o, ps in by_offset.items() if len(ps) > 1}
            if ambiguous:
                fail(f"offset {min(ambiguous)} is in partitions {sorted(ambiguous[min(ambiguous)])}: "
                      "add --partition P", code=1)  # fmt: skip
        done = asyncio.run(resubmit(settings, letters))
    except DeadLetterError as exc:
        fail(str(exc), code=1)
        return
    for letter, written in done:
        click.echo(f"{letter.position} -> {written}  ({letter.error})")
    say(f"re-submitted {len(done)} dead letters")
