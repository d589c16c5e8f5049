"""The ``streamapp`` command line: dev broker, worker, traffic generator and demo."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from streamapp.dev.kafka import DevBroker, DevBrokerError, DevCluster, fetch_kafka_jars
from streamapp.dev.registry import (
    DEFAULT_REGISTRY_PORT,
    DEFAULT_REGISTRY_URL,
    DevRegistry,
    DevRegistryError,
    fetch_registry,
)
from streamapp.settings import Settings, SettingsError, load_settings

__all__ = ["main"]

T = TypeVar("T")


def _say(message: str) -> None:
    click.echo(message, err=True)


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"streamapp: error: {message}", err=True)
    sys.exit(code)


@click.group()
def main() -> None:
    """streamapp: real-time detection on Apache Kafka."""


# -- dev broker -------------------------------------------------------------------------------
@main.group()
def kafka() -> None:
    """Run a real single-node Apache Kafka (KRaft) on 127.0.0.1 for development and tests."""


def _broker(port: int, controller_port: int) -> DevBroker:
    return DevBroker(port=port, controller_port=controller_port)


_port_option = click.option("--port", default=9092, show_default=True, help="Client port.")
_controller_option = click.option(
    "--controller-port", default=9093, show_default=True, help="KRaft controller port."
)
_brokers_option = click.option(
    "--brokers", type=click.IntRange(min=1, max=9), default=1, show_default=True,
    help="Nodes: more than 1 runs a local KRaft cluster, node i on --port+2i and --controller-port+2i.",
)  # fmt: skip


def _cluster_up(brokers: int, port: int, controller_port: int) -> None:
    try:
        cluster = DevCluster(brokers, port=port, controller_port=controller_port)
        status = cluster.up(progress=_say)
    except DevBrokerError as exc:
        _fail(str(exc))
    click.echo(status.describe())


@kafka.command("up")
@_port_option
@_controller_option
@_brokers_option
@click.option(
    "--secure", is_flag=True,
    help="Also listen with SASL_SSL (SCRAM-SHA-512, self-signed TLS) with ACLs; see README 'Security'.",
)  # fmt: skip
@click.option("--secure-port", default=9094, show_default=True, help="SASL_SSL port (with --secure).")
def kafka_up(port: int, controller_port: int, brokers: int, secure: bool, secure_port: int) -> None:
    """Fetch Kafka on first use, start the broker (or --brokers N nodes) and wait until it answers."""
    if brokers > 1:
        if secure:
            _fail("--secure runs on a single node: use it without --brokers")
        _cluster_up(brokers, port, controller_port)
        return
    broker = _broker(port, controller_port)
    if secure:
        settings = _load_or_exit()
        broker = DevBroker(
            port=port, controller_port=controller_port, secure=True, secure_port=secure_port,
            app_id=settings.app_id, topic_prefix=settings.topic_prefix,
        )  # fmt: skip
    try:
        status = broker.up(progress=_say)
    except DevBrokerError as exc:
        _fail(str(exc))
    click.echo(status.describe())
    if broker.material is not None:
        _say(
            "point workers at it: STREAMAPP_BROKER=kafka://"
            + broker.secure_bootstrap
            + " STREAMAPP_SECURITY_PROTOCOL=SASL_SSL STREAMAPP_SASL_MECHANISM=SCRAM-SHA-512"
            + " STREAMAPP_SASL_USERNAME=streamapp"
            + f' STREAMAPP_SASL_PASSWORD="$(cat {broker.material.password_file("streamapp")})"'
            + f" STREAMAPP_SSL_CAFILE={broker.material.ca_file}"
        )


@kafka.command("down")
@_port_option
@_controller_option
@_brokers_option
def kafka_down(port: int, controller_port: int, brokers: int) -> None:
    """Stop the broker (or every node of the --brokers N cluster) that `streamapp kafka up` started."""
    if brokers > 1:
        DevCluster(brokers, port=port, controller_port=controller_port).down(progress=_say)
        return
    _broker(port, controller_port).down(progress=_say)


@kafka.command("status")
@_port_option
@_controller_option
@_brokers_option
def kafka_status(port: int, controller_port: int, brokers: int) -> None:
    """Say whether the dev broker (or each node of the cluster) runs, where, and whether it answers."""
    target: Any = (
        DevCluster(brokers, port=port, controller_port=controller_port)
        if brokers > 1
        else _broker(port, controller_port)
    )
    status = target.status()
    click.echo(status.describe())
    sys.exit(0 if status.running else 3)


@kafka.command("fetch")
def kafka_fetch() -> None:
    """Only download the Kafka jars (done by `up` on first use)."""
    try:
        click.echo(fetch_kafka_jars(progress=_say))
    except DevBrokerError as exc:
        _fail(str(exc))


# -- dev schema registry ----------------------------------------------------------------------
@main.group()
def registry() -> None:
    """Run a real schema registry (Apicurio, in memory, Confluent-compatible API) on 127.0.0.1."""


_registry_port_option = click.option(
    "--port", default=DEFAULT_REGISTRY_PORT, show_default=True, help="HTTP port of the registry."
)


@registry.command("up")
@_registry_port_option
def registry_up(port: int) -> None:
    """Fetch Apicurio Registry on first use, start it and wait until it answers."""
    try:
        status = DevRegistry(port=port).up(progress=_say)
    except DevRegistryError as exc:
        _fail(str(exc))
    click.echo(status.describe())
    _say(f"point workers at it: STREAMAPP_SCHEMA_REGISTRY_URL={status.url}")


@registry.command("down")
@_registry_port_option
def registry_down(port: int) -> None:
    """Stop the registry that `streamapp registry up` started (its schemas are gone: in memory)."""
    DevRegistry(port=port).down(progress=_say)


@registry.command("status")
@_registry_port_option
def registry_status(port: int) -> None:
    """Say whether the dev registry runs, where, and whether it answers."""
    status = DevRegistry(port=port).status()
    click.echo(status.describe())
    sys.exit(0 if status.running else 3)


@registry.command("fetch")
def registry_fetch() -> None:
    """Only download Apicurio Registry (done by `up` on first use)."""
    try:
        click.echo(fetch_registry(progress=_say))
    except DevRegistryError as exc:
        _fail(str(exc))


# -- schemas ----------------------------------------------------------------------------------
def _registry_url(url: str | None) -> str:
    return url or _load_or_exit().schema_registry_url or DEFAULT_REGISTRY_URL


_registry_url_option = click.option(
    "--url",
    default=None,
    help="Registry API root (default: STREAMAPP_SCHEMA_REGISTRY_URL, else the dev registry).",
)


def _schema_file(path: Path) -> str:
    from streamapp.schema.avro import load_schema, parse_schema, schema_text

    try:
        schema = load_schema(path)
        parse_schema(schema)
    except (OSError, ValueError) as exc:
        _fail(f"{path}: {exc}")
    return schema_text(schema)


def _run_registry(action: Callable[[Any], Awaitable[T]], url: str) -> T:
    """Run ``action(client)`` against the registry; unreachable or refusing registries exit with a reason."""
    import asyncio

    from streamapp.schema.registry_client import SchemaRegistryClient, SchemaRegistryUnavailable

    async def run() -> T:
        async with SchemaRegistryClient(url) as client:
            return await action(client)

    try:
        return asyncio.run(run())
    except SchemaRegistryUnavailable as exc:
        _fail(f"{exc} (start one with `streamapp registry up`)")
        raise  # unreachable: _fail exits


def _why_incompatible(subject: str, text: str, url: str) -> str:
    """Plain reasons, from comparing with the subject's latest version, or '' when none is found."""
    from streamapp.schema.avro import explain_incompatibility
    from streamapp.schema.registry_client import SchemaRegistryClient, SchemaRegistryError

    async def latest(client: SchemaRegistryClient) -> tuple[str, str | None]:
        return str((await client.version(subject, "latest"))["schema"]), await client.compatibility(subject)

    try:
        old, level = _run_registry(latest, url)
    except SchemaRegistryError:
        return ""
    reasons = explain_incompatibility(text, old, level)
    return f" [{'; '.join(reasons)}]" if reasons else ""


@main.group()
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
    from streamapp.schema.avro_producer import DEFAULT_COMPATIBILITY
    from streamapp.schema.registry_client import SchemaRegistryClient, SchemaRegistryError

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
        _fail(f"the registry refused {file.name} for subject {subject} ({why}): {exc.reason}{plain}", code=1)
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
    from streamapp.schema.registry_client import Compatibility, SchemaRegistryClient, SchemaRegistryError

    text = _schema_file(file)

    async def check(client: SchemaRegistryClient) -> Compatibility:
        return await client.check(subject, text, version)

    try:
        result = _run_registry(check, _registry_url(url))
    except SchemaRegistryError as exc:
        _fail(f"cannot check {file.name} against {subject}: {exc.reason}", code=1)
        return
    level = result.level or "no rule (anything goes)"
    detail = "; ".join(result.messages)
    if result.is_compatible:
        click.echo(f"{file.name}: compatible with {subject} version {version} (compatibility {level})"
                   + (f": {detail}" if detail else ""))  # fmt: skip
        return
    plain = _why_incompatible(subject, text, _registry_url(url))
    _fail(
        f"{file.name} is NOT compatible with {subject} version {version} (compatibility {level})"
        + (f": {detail}" if detail else "")
        + plain,
        code=1,
    )


# -- Avro producer ----------------------------------------------------------------------------
@main.group()
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
    _quiet_kafka_client()
    import asyncio

    import orjson

    from streamapp.runtime.kafka_clients import client_kwargs
    from streamapp.schema.avro import bundled_schema
    from streamapp.schema.avro_producer import AvroProducer
    from streamapp.schema.registry_client import SchemaRegistryError, SchemaRegistryUnavailable

    settings = _load_or_exit()
    _check_kafka_access(settings)
    schema_value: Any = (
        bundled_schema("user-v1") if schema_path is None else orjson.loads(_schema_file(schema_path))
    )
    records = []
    for number, line in enumerate(sys.stdin, 1):
        if line.strip():
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                _fail(f"line {number} of standard input is not JSON: {exc}")

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
        _say(f"produced {len(futures)} records to {full_topic} (schema id {schema_id})")
        return len(futures)

    from aiokafka.errors import KafkaError

    try:
        asyncio.run(produce())
    except KafkaError as exc:
        _fail(f"cannot produce to the broker at {settings.broker}: {exc}")
    except ValueError as exc:  # a record that does not fit the schema
        _fail(str(exc), code=1)
    except SchemaRegistryError as exc:
        _fail(f"the registry refused the schema: {exc.reason}", code=1)
    except SchemaRegistryUnavailable as exc:
        _fail(f"{exc} (start one with `streamapp registry up`)")


# -- dead letters -----------------------------------------------------------------------------
@main.group()
def dlq() -> None:
    """Inspect dead letters and re-submit chosen ones to their source topic."""
    _quiet_kafka_client()


def _quiet_kafka_client() -> None:
    # aiokafka logs every failed connection attempt; the command says what failed in one line
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


@dlq.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Newest N only.")
@click.option("--topic", default=None, help="Only dead letters from this source topic (e.g. users).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def dlq_list(limit: int, topic: str | None, as_json: bool) -> None:
    """List dead letters, oldest first, with their reasons and where they came from."""
    import asyncio

    import orjson

    from streamapp.ops.dlq import DeadLetterError, read_dead_letters

    settings = _load_or_exit()
    _check_kafka_access(settings)
    try:
        letters = asyncio.run(read_dead_letters(settings, source_topic=topic, limit=limit))
    except DeadLetterError as exc:
        _fail(str(exc), code=1)
        return
    for letter in letters:
        click.echo(orjson.dumps(letter.summary()).decode() if as_json else letter.describe())
    _say(f"{len(letters)} dead letters" + (f" from {topic}" if topic else ""))


@dlq.command("resubmit")
@click.option("--offset", "offsets", type=int, multiple=True, help="Dead-letter offset (repeatable).")
@click.option("--partition", type=int, default=None, help="Dead-letters partition of --offset.")
@click.option("--all", "resubmit_all", is_flag=True, help="Every dead letter (of --topic, if given).")
@click.option("--topic", default=None, help="Only dead letters from this source topic.")
def dlq_resubmit(
    offsets: tuple[int, ...], partition: int | None, resubmit_all: bool, topic: str | None
) -> None:
    """Re-submit dead letters byte-for-byte (key, value, original headers) to their source topic."""
    import asyncio

    from streamapp.ops.dlq import DeadLetterError, read_dead_letters, resubmit

    if resubmit_all == bool(offsets):
        _fail("say which: --offset O [--partition P] (see `streamapp dlq list`), or --all")
    settings = _load_or_exit()
    _check_kafka_access(settings)
    positions = None if resubmit_all else [(partition, o) for o in offsets]
    try:
        letters = asyncio.run(read_dead_letters(settings, source_topic=topic, positions=positions))
        if positions is not None:
            found = {(letter.partition, letter.offset) for letter in letters}
            missing = [o for p, o in positions if not any(o == fo and p in (None, fp) for fp, fo in found)]
            if missing:
                _fail(f"no dead letter at offset {', '.join(map(str, missing))}"
                      + (f" of partition {partition}" if partition is not None else ""), code=1)  # fmt: skip
            by_offset: dict[int, list[int]] = {}
            for fp, fo in found:
                by_offset.setdefault(fo, []).append(fp)
            ambiguous = {o: ps for o, ps in by_offset.items() if len(ps) > 1}
            if ambiguous:
                _fail(f"offset {min(ambiguous)} is in partitions {sorted(ambiguous[min(ambiguous)])}: "
                      "add --partition P", code=1)  # fmt: skip
        done = asyncio.run(resubmit(settings, letters))
    except DeadLetterError as exc:
        _fail(str(exc), code=1)
        return
    for letter, written in done:
        click.echo(f"{letter.position} -> {written}  ({letter.error})")
    _say(f"re-submitted {len(done)} dead letters")


# -- dev prometheus ---------------------------------------------------------------------------
@main.group()
def prometheus() -> None:
    """Run a real Prometheus (Debian's package) on 127.0.0.1 that scrapes the workers."""


_prometheus_port_option = click.option(
    "--port", default=9090, show_default=True, help="Prometheus web/API port."
)


@prometheus.command("up")
@_prometheus_port_option
@click.option(
    "--target",
    "targets",
    multiple=True,
    default=("127.0.0.1:6066",),
    show_default=True,
    help="A worker's web address host:port to scrape (repeatable).",
)
@click.option("--scrape-interval", default="2s", show_default=True, help="How often to scrape.")
def prometheus_up(port: int, targets: tuple[str, ...], scrape_interval: str) -> None:
    """Start Prometheus (or give the running one new targets) and wait until it is ready."""
    from streamapp.dev.prometheus import DevPrometheus, DevPrometheusError

    try:
        status = DevPrometheus(port=port).up(targets, scrape_interval, progress=_say)
    except DevPrometheusError as exc:
        _fail(str(exc))
    click.echo(status.describe())


@prometheus.command("down")
@_prometheus_port_option
def prometheus_down(port: int) -> None:
    """Stop the Prometheus that `streamapp prometheus up` started (its data stays)."""
    from streamapp.dev.prometheus import DevPrometheus

    DevPrometheus(port=port).down(progress=_say)


@prometheus.command("status")
@_prometheus_port_option
def prometheus_status(port: int) -> None:
    """Say whether the dev Prometheus runs, what it scrapes, and whether it is ready."""
    from streamapp.dev.prometheus import DevPrometheus

    status = DevPrometheus(port=port).status()
    click.echo(status.describe())
    sys.exit(0 if status.running else 3)


# -- dev sinks: PostgreSQL and InfluxDB -------------------------------------------------------
@main.group()
def postgres() -> None:
    """Run a real PostgreSQL (Debian's package) on 127.0.0.1 for the sink."""


_postgres_port_option = click.option("--port", default=5432, show_default=True, help="PostgreSQL port.")


@postgres.command("up")
@_postgres_port_option
def postgres_up(port: int) -> None:
    """Create the cluster on first use, start it and print the DSN to use."""
    from streamapp.dev.postgres import DevPostgres, DevPostgresError

    try:
        status = DevPostgres(port=port).up(progress=_say)
    except DevPostgresError as exc:
        _fail(str(exc))
    click.echo(status.describe())
    _say(f"point workers at it: STREAMAPP_POSTGRES_DSN={status.dsn}")


@postgres.command("down")
@_postgres_port_option
def postgres_down(port: int) -> None:
    """Stop the PostgreSQL that `streamapp postgres up` started (its data stays)."""
    from streamapp.dev.postgres import DevPostgres, DevPostgresError

    try:
        DevPostgres(port=port).down(progress=_say)
    except DevPostgresError as exc:
        _fail(str(exc))


@postgres.command("status")
@_postgres_port_option
def postgres_status(port: int) -> None:
    """Say whether the dev PostgreSQL runs, where, and whether it accepts connections."""
    from streamapp.dev.postgres import DevPostgres

    status = DevPostgres(port=port).status()
    click.echo(status.describe())
    sys.exit(0 if status.running else 3)


@main.group()
def influx() -> None:
    """Run a real InfluxDB 1.x (Debian's package) on 127.0.0.1 for the sink."""


_influx_port_option = click.option("--port", default=8086, show_default=True, help="InfluxDB HTTP port.")


@influx.command("up")
@_influx_port_option
def influx_up(port: int) -> None:
    """Start influxd with a generated config, create the database and print the URL to use."""
    from streamapp.dev.influx import DevInflux, DevInfluxError

    try:
        status = DevInflux(port=port).up(progress=_say)
    except DevInfluxError as exc:
        _fail(str(exc))
    click.echo(status.describe())
    _say(f"point workers at it: STREAMAPP_INFLUX_URL={status.url}")


@influx.command("down")
@_influx_port_option
def influx_down(port: int) -> None:
    """Stop the influxd that `streamapp influx up` started (its data stays)."""
    from streamapp.dev.influx import DevInflux

    DevInflux(port=port).down(progress=_say)


@influx.command("status")
@_influx_port_option
def influx_status(port: int) -> None:
    """Say whether the dev InfluxDB runs, where, and whether it answers."""
    from streamapp.dev.influx import DevInflux

    status = DevInflux(port=port).status()
    click.echo(status.describe())
    sys.exit(0 if status.running else 3)


# -- dev S3 (the archive's object store) -------------------------------------------------------
@main.group()
def s3() -> None:
    """Run a real S3-compatible server (S3Proxy, filesystem backend) on 127.0.0.1 for the archive."""


_s3_port_option = click.option("--port", default=9000, show_default=True, help="S3 HTTP port.")


@s3.command("up")
@_s3_port_option
def s3_up(port: int) -> None:
    """Fetch S3Proxy on first use, start it with generated credentials and print how to use it."""
    from streamapp.dev.s3 import DevS3, DevS3Error

    try:
        status = DevS3(port=port).up(progress=_say)
    except DevS3Error as exc:
        _fail(str(exc))
    click.echo(status.describe())
    _say(status.usage())


@s3.command("down")
@_s3_port_option
def s3_down(port: int) -> None:
    """Stop the S3Proxy that `streamapp s3 up` started (its objects stay)."""
    from streamapp.dev.s3 import DevS3

    DevS3(port=port).down(progress=_say)


@s3.command("status")
@_s3_port_option
def s3_status(port: int) -> None:
    """Say whether the dev S3 server runs, where, and whether it answers."""
    from streamapp.dev.s3 import DevS3

    status = DevS3(port=port).status()
    click.echo(status.describe())
    if status.running:
        _say(status.usage())
    sys.exit(0 if status.running else 3)


@s3.command("fetch")
def s3_fetch() -> None:
    """Only download S3Proxy (done by `up` on first use)."""
    from streamapp.dev.s3 import DevS3Error, fetch_s3proxy

    try:
        click.echo(fetch_s3proxy(progress=_say))
    except DevS3Error as exc:
        _fail(str(exc))


# -- archive ----------------------------------------------------------------------------------
@main.group()
def archive() -> None:
    """Keep every topic as Parquet on S3 (STREAMAPP_ARCHIVE_URL) and see what is kept."""


def _archive_store(settings: Settings) -> Any:
    from streamapp.archive.store import ArchiveStore

    try:
        return ArchiveStore(settings)
    except SettingsError as exc:
        _fail(str(exc))


@archive.command("run")
def archive_run() -> None:
    """Run the archiver until Ctrl-C or SIGTERM (it uploads what it holds before it exits)."""
    import asyncio
    import signal

    from streamapp.archive.archiver import Archiver

    _configure_logging()
    _quiet_kafka_client()
    settings = _load_or_exit()
    _check_kafka_access(settings)
    archiver = Archiver(settings, _archive_store(settings), echo=_say)

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
    import json

    from streamapp.archive.store import ArchiveUnavailable

    settings = _load_or_exit()
    store = _archive_store(settings)
    try:
        objects = store.objects(topic)
        counted = [(obj, store.rows(obj)) for obj in objects]
    except ArchiveUnavailable as exc:
        _fail(str(exc), code=1)
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


# -- batch layer --------------------------------------------------------------------------------
@main.command()
@click.option("--since", required=True, metavar="TIME", help="Start (ISO-8601, epoch s).")
@click.option("--until", required=True, metavar="TIME", help="End, exclusive (same forms).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the report as JSON to FILE ('-': standard output).")  # fmt: skip
def batch(since: str, until: str, json_path: Path | None) -> None:
    """Recompute the detections over the archive and reconcile them with the stream's alerts.

    Exit 0 when both agree, 1 when an alert is in one and not the other.
    """
    import json

    from streamapp.archive.batch import reconcile
    from streamapp.archive.store import ArchiveUnavailable
    from streamapp.ops.replay import ReplayError, parse_start_time

    settings = _load_or_exit()
    store = _archive_store(settings)
    try:
        start, end = parse_start_time(since), parse_start_time(until)
    except ReplayError as exc:
        _fail(str(exc).replace("--from", "--since/--until"))
    if end <= start:
        _fail("--until must be after --since")
    try:
        result = reconcile(settings, store, start, end)
    except ArchiveUnavailable as exc:
        _fail(str(exc), code=1)
    if json_path is not None:
        text = json.dumps(result.to_json(), indent=2)
        if str(json_path) == "-":
            click.echo(text)
        else:
            json_path.write_text(text + "\n")
    click.echo(result.summary(), err=str(json_path) == "-")
    sys.exit(0 if result.agrees else 1)


# -- worker -----------------------------------------------------------------------------------
@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--web-port", type=int, help="Web API port (default STREAMAPP_WEB_PORT or 6066).")
@click.option("--data-dir", type=click.Path(path_type=Path), help="RocksDB state directory.")
@click.option("--loglevel", "-l", default=None, help="Log level (default STREAMAPP_LOG_LEVEL).")
def worker(web_port: int | None, data_dir: Path | None, loglevel: str | None) -> None:
    """Run a Faust worker (same app as `faust -A streamapp.app worker`)."""
    if web_port is not None:
        os.environ["STREAMAPP_WEB_PORT"] = str(web_port)
    if data_dir is not None:
        os.environ["STREAMAPP_DATA_DIR"] = str(data_dir.expanduser().absolute())
    _check_kafka_access(_load_or_exit())
    _check_replication(_load_or_exit())
    from streamapp.app import app, import_app_modules, settings
    from streamapp.runtime.transactions import discard_state_after_unclean_stop, mark_clean_stop

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
        _say("streamapp: the last stop was not clean: tables are rebuilt from the changelogs")
    try:
        app.main()
    except SystemExit as exc:
        if exactly_once and exc.code in (0, None):
            mark_clean_stop(settings.data_dir)
        raise


# -- traffic ----------------------------------------------------------------------------------
@main.command()
@click.option("--rate", default=200, show_default=True, help="Background events per second.")
@click.option("--duration", type=float, default=None, help="Seconds to run (default: until Ctrl-C).")
@click.option(
    "--scenario",
    type=click.Choice(["all", "logins", "sensors", "transactions", "stocks"]),
    default="all",
    show_default=True,
    help="Which input topics get traffic (all: the four, sharing --rate).",
)
@click.option("--keys/--no-keys", default=True, show_default=True, help="Set record keys.")
@click.option("--seed", type=int, default=None, help="Seed for reproducible traffic (default: random).")
@click.option(
    "--incidents",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help='Append every injected incident to FILE as a JSON line {"kind", "key", "at"}.',
)
def generate(
    rate: int, duration: float | None, scenario: str, keys: bool, seed: int | None, incidents: Path | None
) -> None:
    """Produce realistic traffic with injected incidents to the input topics."""
    import asyncio

    from streamapp.ops.generate import SCENARIOS, produce_traffic

    if scenario not in SCENARIOS:
        _fail(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if rate <= 0:
        _fail("--rate must be a positive number of events per second")
    _configure_logging()
    settings = _load_or_exit()
    _check_kafka_access(settings)
    try:
        sent = asyncio.run(produce_traffic(settings, scenario, rate, duration, keys, seed, incidents))
    except KeyboardInterrupt:
        return
    _say(f"produced {sent} events")


@main.command()
@click.option("--rate", default=200, show_default=True, help="Background events per second.")
@click.option("--duration", type=float, default=None, help="Stop after S seconds (default: Ctrl-C).")
def demo(rate: int, duration: float | None) -> None:
    """Start the dev broker, a worker and traffic; show alerts live; Ctrl-C stops all of it.

    When the worker or the generator stops on its own, the demo says which, shows the end of its log,
    stops the rest and exits 1.
    """
    from streamapp.ops.demo import run_demo

    settings = _load_or_exit()
    try:
        code = run_demo(settings, click.echo, rate=rate, duration=duration)
    except DevBrokerError as exc:
        _fail(str(exc))
    sys.exit(code)


# -- replay -----------------------------------------------------------------------------------
@main.command()
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
    from streamapp.ops import replay as replaying

    settings = _load_or_exit()
    _check_kafka_access(settings)
    if since is not None and not from_archive:
        _fail("--since goes with --from-archive (replays from Kafka take --from)")
    if from_archive and (from_time is not None or serve):
        _fail("--from-archive takes --since, not --from; it does not --serve (it replays staging copies)")
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
        _fail(str(exc))


def _stage_archive(
    settings: Settings, app_id: str, topics: Any, since: str | None, force: bool
) -> tuple[Any, str]:
    """Copy archive + Kafka tail into the replay's staging topics; the topics and prefix to replay."""
    import asyncio
    import dataclasses

    from streamapp.archive.replay import StagingError, delete_staging, stage_from_archive, staging_prefix
    from streamapp.archive.store import ArchiveUnavailable
    from streamapp.ops import replay as replaying

    store = _archive_store(settings)
    since_ms = None if since is None else int(replaying.parse_start_time(since) * 1000)
    names = [t.removeprefix(settings.topic_prefix) for t in topics.source]
    prefix = staging_prefix(settings, app_id)
    click.echo(f"staging {len(names)} source topics from {store.url} and Kafka into {prefix}* ...")
    try:
        asyncio.run(delete_staging(settings, app_id, force))
        asyncio.run(stage_from_archive(settings, store, app_id, names, since_ms, click.echo))
    except (StagingError, ArchiveUnavailable) as exc:
        _fail(str(exc), code=1)
    return dataclasses.replace(topics, source=tuple(prefix + n for n in names)), prefix


def _check_kafka_access(settings: Settings) -> None:
    """Stop with one line (exit 1) when the broker refuses the credentials, TLS or the ACLs."""
    if settings.security_protocol == "PLAINTEXT":
        return  # nothing to refuse: faust's own retries cover a broker that is still starting
    import asyncio

    from streamapp.runtime.kafka_clients import KafkaAccessError, check_access

    try:
        asyncio.run(check_access(settings))
    except KafkaAccessError as exc:
        _fail(str(exc), code=1)


def _check_replication(settings: Settings) -> None:
    """Refuse STREAMAPP_REPLICATION_FACTOR above the brokers the cluster reports (exit 2)."""
    import asyncio

    from streamapp.runtime.replication import check_replication

    _quiet_kafka_client()
    try:
        asyncio.run(check_replication(settings))
    except SettingsError as exc:
        _fail(str(exc))
    finally:
        logging.getLogger("aiokafka").setLevel(logging.NOTSET)


def _configure_logging(level: str = "info") -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _load_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits


def _add_detections() -> None:
    from streamapp.detections.cli import detections

    main.add_command(detections)


_add_detections()

if __name__ == "__main__":  # pragma: no cover
    main()
