"""`streamapp schema register|check` and `streamapp avro produce`: Avro schemas in the registry."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
from aiokafka.errors import KafkaError

from streamapp.cli.common import (
    check_kafka_access,
    fail,
    load_or_exit,
    quiet_kafka_client,
    say,
)
from streamapp.dev.registry import DEFAULT_REGISTRY_URL
from streamapp.runtime.kafka_clients import client_kwargs
from streamapp.schema.avro import (
    bundled_schema,
    explain_incompatibility,
    load_schema,
    parse_schema,
    schema_text,
)
from streamapp.schema.avro_producer import DEFAULT_COMPATIBILITY, AvroProducer
from streamapp.schema.registry_client import (
    Compatibility,
    SchemaRegistryClient,
    SchemaRegistryError,
    SchemaRegistryUnavailable,
)

__all__ = ["schema", "avro"]

T = TypeVar("T")


def _registry_url(url: str | None) -> str:
    return url or load_or_exit().schema_registry_url or DEFAULT_REGISTRY_URL


_registry_url_option = click.option(
    "--url",
    default=None,
    help="Registry API root (default: STREAMAPP_SCHEMA_REGISTRY_URL, else the dev registry).",
)


def _schema_file(path: Path) -> str:
    try:
        schema = load_schema(path)
        parse_schema(schema)
    except (OSError, ValueError) as exc:
        fail(f"{path}: {exc}")
    return schema_text(schema)


def _run_registry(action: Callable[[Any], Awaitable[T]], url: str) -> T:
    """Run ``action(client)`` against the registry; unreachable or refusing registries exit with a reason."""

    async def run() -> T:
        async with SchemaRegistryClient(url) as client:
            return await action(client)

    try:
        return asyncio.run(run())
    except SchemaRegistryUnavailable as exc:
        fail(f"{exc} (start one with `streamapp registry up`)")


def _why_incompatible(subject: str, text: str, url: str) -> str:
    """Plain reasons, from comparing with the subject's latest version, or '' when none is found."""

    async def latest(client: SchemaRegistryClient) -> tuple[str, str | None]:
        return str((await client.version(subject, "latest"))["schema"]), await client.compatibility(subject)

    try:
        old, level = _run_registry(latest, url)
    except SchemaRegistryError:
        return ""
    reasons = explain_incompatibility(text, old, level)
    return f" [{'; '.join(reasons)}]" if reasons else ""


@click.group()
def schema() -> None:
    """Register and check Avro schemas in the schema registry."""


@schema.command("register")
@click.option("--subject", required=True, help="Subject, e.g. users-value (the topic name + '-value').")
@click.option(
    "--compatibility",
    type=click.Choice(["BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL",
                       "FULL_TRANSITIVE", "NONE"]),
    default=None,
    help="Set the subject's compatibility rule first (default: BACKWARD for a subject with no rule).",
)  # fmt: skip
@_registry_url_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def schema_register(subject: str, compatibility: str | None, url: str | None, file: Path) -> None:
    """Register the Avro schema in FILE under SUBJECT; a refusal prints the registry's reason."""
    text = _schema_file(file)

    async def register(client: SchemaRegistryClient) -> tuple[int, dict[str, Any], str]:
        level = await client.compatibility(subject)
        if compatibility is not None and compatibility != level:
            level = await client.set_compatibility(subject, compatibility)
        elif level is None:
            level = await client.set_compatibility(subject, DEFAULT_COMPATIBILITY)
        schema_id = await client.register(subject, text)
        return schema_id, await client.version(subject, "latest"), level

    try:
        schema_id, latest, level = _run_registry(register, _registry_url(url))
    except SchemaRegistryError as exc:
        why = "incompatible" if exc.status == 409 else f"HTTP {exc.status}"
        plain = _why_incompatible(subject, text, _registry_url(url)) if exc.status == 409 else ""
        fail(f"the registry refused {file.name} for subject {subject} ({why}): {exc.reason}{plain}", code=1)
        return
    version = latest.get("version") if latest.get("id") == schema_id else "an earlier version"
    click.echo(f"{file.name}: registered under {subject} as schema id {schema_id}, version {version} "
               f"(compatibility {level})")  # fmt: skip


@schema.command("check")
@click.option("--subject", required=True, help="Subject to check against, e.g. users-value.")
@click.option("--version", "version", default="latest", show_default=True, help="Version to compare with.")
@_registry_url_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def schema_check(subject: str, version: str, url: str | None, file: Path) -> None:
    """Ask the registry whether FILE may be registered under SUBJECT (exit 1 when not)."""
    text = _schema_file(file)

    async def check(client: SchemaRegistryClient) -> Compatibility:
        return await client.check(subject, text, version)

    try:
        result = _run_registry(check, _registry_url(url))
    except SchemaRegistryError as exc:
        fail(f"cannot check {file.name} against {subject}: {exc.reason}", code=1)
        return
    level = result.level or "no rule (anything goes)"
    detail = "; ".join(result.messages)
    if result.is_compatible:
        click.echo(f"{file.name}: compatible with {subject} version {version} (compatibility {level})"
                   + (f": {detail}" if detail else ""))  # fmt: skip
        return
    plain = _why_incompatible(subject, text, _registry_url(url))
    fail(
        f"{file.name} is NOT compatible with {subject} version {version} (compatibility {level})"
        + (f": {detail}" if detail else "")
        + plain,
        code=1,
    )


@click.group()
def avro() -> None:
    """Produce Avro records in the Confluent wire format (schema registered or looked up)."""


@avro.command("produce")
@click.option("--topic", default="users", show_default=True, help="Topic (STREAMAPP_TOPIC_PREFIX applies).")
@click.option(
    "--schema", "schema_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
    help="Avro schema file (default: the bundled example.avro.User v1).",
)  # fmt: skip
@click.option(
    "--key-field", default="name", show_default=True, help="Record field used as key ('' for none)."
)
@_registry_url_option
def avro_produce(topic: str, schema_path: Path | None, key_field: str, url: str | None) -> None:
    """Read JSON objects, one a line, from standard input and produce them as Avro records."""
    quiet_kafka_client()

    settings = load_or_exit()
    check_kafka_access(settings)
    schema_value: Any = (
        bundled_schema("user-v1") if schema_path is None else orjson.loads(_schema_file(schema_path))
    )
    records = []
    for number, line in enumerate(sys.stdin, 1):
        if line.strip():
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                fail(f"line {number} of standard input is not JSON: {exc}")

    async def produce() -> int:
        full_topic = settings.topic(topic)
        kafka_options = client_kwargs(settings)
        async with AvroProducer(settings.bootstrap_servers, _registry_url(url), **kafka_options) as producer:
            futures = []
            for number, record in enumerate(records, 1):
                key = record.get(key_field) if key_field and isinstance(record, dict) else None
                key_text = None if key is None else str(key)
                try:
                    futures.append(await producer.send(full_topic, record, schema_value, key=key_text))
                except ValueError as exc:
                    raise ValueError(f"record {number}: {exc}") from None
            await asyncio.gather(*futures)
            schema_id, _ = await producer.schema_id(f"{full_topic}-value", schema_value)
        say(f"produced {len(futures)} records to {full_topic} (schema id {schema_id})")
        return len(futures)

    try:
        asyncio.run(produce())
    except KafkaError as exc:
        fail(f"cannot produce to the broker at {settings.broker}: {exc}")
    except ValueError as exc:  # a record that does not fit the schema
        fail(str(exc), code=1)
    except SchemaRegistryError as exc:
        fail(f"the registry refused the schema: {exc.reason}", code=1)
    except SchemaRegistryUnavailable as exc:
        fail(f"{exc} (start one with `streamapp registry up`)")
