"""Avro `users` on the real broker and registry: both schema versions read; unsafe evolution refused."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import orjson
import pytest

from streamapp.ops.dlq import DeadLetter, DeadLetterError, read_dead_letters
from streamapp.schema.avro import bundled_schema
from streamapp.schema.avro_producer import AvroProducer
from streamapp.schema.registry_client import SchemaRegistryClient
from streamapp.settings import load_settings
from tests.integration.conftest import free_port
from tests.integration.kafka_io import produce, read_until

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).resolve().parents[2] / "streamapp" / "schema" / "avsc"


def _cli(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamapp.cli", *args],
        env=env, input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("streamapp: error: "), lines[0]
    return lines[0]


async def test_avro_users_of_both_versions_are_decoded_and_served_by_any_worker(
    kafka_bootstrap, schema_registry_url, names, worker_factory
):
    env = {"STREAMAPP_SCHEMA_REGISTRY_URL": schema_registry_url}
    workers = [worker_factory(**env), worker_factory(**env)]
    topic = names.topic("users")
    v1, v2 = bundled_schema("user-v1"), bundled_schema("user-v2")
    async with AvroProducer(kafka_bootstrap, schema_registry_url) as producer:
        sent = [
            await producer.send(topic, {"name": "ann", "age": 31}, v1, key="ann"),
            await producer.send(topic, {"name": "bob", "age": 40}, v1),  # no key: re-keyed by name
        ]
        await asyncio.gather(*sent)
        await asyncio.sleep(0.05)  # "latest" is by record time: keep the next ones strictly later
        sent = [
            await producer.send(topic, {"name": "carl", "age": 25, "email": "carl@example.com"}, v2),
            await producer.send(topic, {"name": "ann", "age": 32, "email": None}, v2, key="ann"),
        ]
        await asyncio.gather(*sent)
        id_v1, _ = await producer.schema_id(f"{topic}-value", v1)
        id_v2, _ = await producer.schema_id(f"{topic}-value", v2)
    assert id_v1 != id_v2

    async with SchemaRegistryClient(schema_registry_url) as registry:
        assert await registry.versions(f"{topic}-value") == [1, 2]
        assert await registry.compatibility(f"{topic}-value") == "BACKWARD"

    for worker in workers:  # any worker answers for any name (forwarded to the owner)
        ann = worker.wait_for("/users/ann", lambda s, b: s == 200 and b["schema_id"] == id_v2)
        assert ann["record"] == {"name": "ann", "age": 32, "email": None}
        bob = worker.wait_for("/users/bob", lambda s, b: s == 200)
        assert bob == {
            "name": "bob",
            "schema_id": id_v1,
            "ts": bob["ts"],
            "record": {"name": "bob", "age": 40},
        }
        carl = worker.wait_for("/users/carl", lambda s, b: s == 200)
        assert (carl["schema_id"], carl["record"]["email"]) == (id_v2, "carl@example.com")
        status, body = worker.get("/users/nobody")
        assert status == 404 and "error" in body


def test_schema_evolution_compatible_accepted_incompatible_refused_with_the_reason(
    schema_registry_url, names
):
    env = {**_base_env(), "STREAMAPP_SCHEMA_REGISTRY_URL": schema_registry_url}
    subject = f"{names.prefix}users-value"

    first = _cli("schema", "register", "--subject", subject, str(SCHEMAS / "user-v1.avsc"), env=env)
    assert first.returncode == 0, first.stderr
    assert "version 1 (compatibility BACKWARD)" in first.stdout

    check = _cli("schema", "check", "--subject", subject, str(SCHEMAS / "user-v2.avsc"), env=env)
    assert check.returncode == 0, check.stderr
    assert "compatible" in check.stdout
    second = _cli("schema", "register", "--subject", subject, str(SCHEMAS / "user-v2.avsc"), env=env)
    assert second.returncode == 0, second.stderr
    assert "version 2 (compatibility BACKWARD)" in second.stdout

    age = _cli("schema", "register", "--subject", subject, str(SCHEMAS / "user-incompatible-age-string.avsc"),
               env=env)  # fmt: skip
    assert age.returncode == 1
    line = _one_error_line(age)
    assert "refused user-incompatible-age-string.avsc" in line and "(incompatible)" in line
    assert "STRING not compatible with writer type: INT" in line  # the registry's own reason
    assert "field 'age' is int in the older schema and string in the newer one" in line

    no_default = SCHEMAS / "user-incompatible-no-default.avsc"
    refused = _cli("schema", "register", "--subject", subject, str(no_default), env=env)
    assert refused.returncode == 1
    assert "field 'country' has no default" in _one_error_line(refused)
    checked = _cli("schema", "check", "--subject", subject, str(no_default), env=env)
    assert checked.returncode == 1
    assert "NOT compatible" in _one_error_line(checked)

    # nothing of the refused schemas was stored; the same v2 again is the same version
    again = _cli("schema", "register", "--subject", subject, str(SCHEMAS / "user-v2.avsc"), env=env)
    assert again.returncode == 0 and "version 2" in again.stdout


def test_cli_helper_produces_avro_users(kafka_bootstrap, schema_registry_url, names, worker_factory):
    worker = worker_factory(STREAMAPP_SCHEMA_REGISTRY_URL=schema_registry_url)
    env = {
        **_base_env(),
        "STREAMAPP_BROKER": f"kafka://{kafka_bootstrap}",
        "STREAMAPP_TOPIC_PREFIX": names.prefix,
        "STREAMAPP_SCHEMA_REGISTRY_URL": schema_registry_url,
    }
    produced = _cli(
        "avro", "produce", env=env, stdin='{"name": "dora", "age": 28}\n{"name": "eve", "age": 51}\n'
    )
    assert produced.returncode == 0, produced.stderr
    assert "produced 2 records" in produced.stderr
    v2 = str(SCHEMAS / "user-v2.avsc")
    produced = _cli(
        "avro", "produce", "--schema", v2, env=env, stdin='{"name": "dora", "age": 29, "email": "d@x"}\n'
    )
    assert produced.returncode == 0, produced.stderr
    assert worker.wait_for("/users/eve", lambda s, b: s == 200)["record"] == {"name": "eve", "age": 51}
    dora = worker.wait_for("/users/dora", lambda s, b: s == 200 and b["record"]["age"] == 29)
    assert dora["record"]["email"] == "d@x"

    bad = _cli("avro", "produce", env=env, stdin='{"name": "fay", "age": "old"}\n')
    assert bad.returncode == 1
    assert "record 1: record does not match the schema: example.avro.User.age is <old>" in _one_error_line(
        bad
    )


def _base_env() -> dict[str, str]:
    return dict(os.environ)


async def test_a_registry_that_cannot_answer_delays_users_and_loses_nothing(
    kafka_bootstrap, schema_registry_url, names, worker_factory
):
    # a wrong URL (the registry's root, not its Confluent API): 404s that are not "no such schema"
    wrong = schema_registry_url.removesuffix("/apis/ccompat/v7") + "/no-such-api"
    first = worker_factory(STREAMAPP_SCHEMA_REGISTRY_URL=wrong)
    topic = names.topic("users")
    async with AvroProducer(kafka_bootstrap, schema_registry_url) as producer:
        await (await producer.send(topic, {"name": "gus", "age": 61}, bundled_schema("user-v1"), key="gus"))
    deadline = asyncio.get_running_loop().time() + 90
    while "check STREAMAPP_SCHEMA_REGISTRY_URL" not in first.log_text():
        assert asyncio.get_running_loop().time() < deadline, first.log_tail()
        await asyncio.sleep(0.5)
    assert first.get("/users/gus")[0] == 404
    first.stop()  # the record was never acknowledged ...
    assert await _dead_letters(kafka_bootstrap, names.prefix) == []

    second = worker_factory(STREAMAPP_SCHEMA_REGISTRY_URL=schema_registry_url)
    gus = second.wait_for("/users/gus", lambda s, b: s == 200)  # ... so a fixed worker reads it
    assert gus["record"] == {"name": "gus", "age": 61}
    assert await _dead_letters(kafka_bootstrap, names.prefix) == []


async def _dead_letters(bootstrap: str, prefix: str) -> list[DeadLetter]:
    """This test's dead letters (none when the topic does not even exist yet)."""
    settings = load_settings({"STREAMAPP_BROKER": f"kafka://{bootstrap}", "STREAMAPP_TOPIC_PREFIX": prefix})
    try:
        return await read_dead_letters(settings)
    except DeadLetterError:
        return []


class _Relay:
    """A TCP relay on ``port`` to the real registry, switched on and off: the registry comes and goes."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: asyncio.AbstractServer | None = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def up(self) -> None:
        async def start() -> asyncio.AbstractServer:
            return await asyncio.start_server(self._serve, "127.0.0.1", self.port)

        self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    def close(self) -> None:
        async def shutdown() -> None:
            if self.server is not None:
                self.server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def test_a_registry_that_is_down_pauses_only_users_and_they_are_processed_when_it_is_back(
    kafka_bootstrap, schema_registry_url, names, worker_factory
):
    port = free_port()  # nothing listens here until the relay to the real registry starts
    target = urllib.parse.urlparse(schema_registry_url)
    relay = _Relay(port, (target.hostname, target.port))
    worker = worker_factory(STREAMAPP_SCHEMA_REGISTRY_URL=f"http://127.0.0.1:{port}/apis/ccompat/v7")
    try:
        users = [("ann", 31), ("bob", 40), ("cy", 22)]
        async with AvroProducer(kafka_bootstrap, schema_registry_url) as producer:
            sent = [
                await producer.send(names.topic("users"), {"name": n, "age": a}, bundled_schema("user-v1"))
                for n, a in users
            ]
            await asyncio.gather(*sent)
        ready = worker.wait_for("/ready", lambda s, b: s == 200 and b["degraded"])
        assert ready == {"ready": True, "degraded": ["schema-registry: users paused"]}
        assert worker.metric("streamapp_dependency_up", dependency="schema_registry") == 0

        # logins flow on while users wait
        base = (time.time() // 10) * 10 - 30
        logins = [{"ts": base + i, "ip": "203.0.113.9", "user": "root", "success": False} for i in range(7)]
        await produce(kafka_bootstrap, names.topic("logins"), logins)
        alerts = await read_until(kafka_bootstrap, names.topic("alerts"), lambda recs: len(recs) >= 1)
        assert orjson.loads(alerts[0].value)["kind"] == "brute_force"
        assert worker.get("/users/ann")[0] == 404
        assert worker.get("/ready")[1]["degraded"] == ["schema-registry: users paused"]

        relay.up()  # the registry is back: every users record is processed, none lost
        for name, age in users:
            user = worker.wait_for(f"/users/{name}", lambda s, b: s == 200, timeout=60)
            assert user["record"] == {"name": name, "age": age}
        assert worker.get("/ready") == (200, {"ready": True, "degraded": []})
        assert worker.metric("streamapp_dependency_up", dependency="schema_registry") == 1
        assert await _dead_letters(kafka_bootstrap, names.prefix) == []
        assert worker.proc is not None and worker.proc.poll() is None
    finally:
        relay.close()
