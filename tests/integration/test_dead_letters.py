"""A mixed stream of good and bad records on every input topic: processed + dead-lettered = produced.

Every bad kind (malformed JSON, non-UTF-8 bytes, wrong or missing fields, unknown schema id,
corrupt Avro body, oversized record, null value) goes to every input topic, `users` (Avro) and the
JSON ones, shuffled among good records. Then `streamapp dlq` lists them and re-submits some.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import struct
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streamapp.schema.avro import bundled_schema, encode_record, parse_schema
from streamapp.schema.avro_producer import AvroProducer
from tests.integration.kafka_io import read_all, read_until

pytestmark = pytest.mark.integration

MAX_RECORD_BYTES = 1_048_576  # the default of STREAMAPP_MAX_RECORD_BYTES
UNKNOWN_ID = 2**31 - 1
PET = {
    "type": "record",
    "name": "Pet",
    "namespace": "example.avro",
    "fields": [{"name": "name", "type": "string"}],
}


def _frame(schema_id: int, body: bytes) -> bytes:
    return struct.pack(">BI", 0, schema_id) + body


def _json_goods(now: float) -> dict[str, list[dict[str, Any]]]:
    return {
        "logins": [
            {"ts": now - i, "ip": f"192.0.2.{i}", "user": f"u{i}", "success": i % 3 == 0} for i in range(30)
        ],
        "sensor-readings": [
            {"ts": now - i, "sensor_id": f"s{i % 4}", "temperature": 20 + i / 10} for i in range(30)
        ],
        "transactions": [
            {"ts": now - i, "txn_id": f"t{i}", "card_id": f"c{i % 5}", "amount": 10.0 + i} for i in range(30)
        ],
        "stock-prices": [{"ts": now - i, "symbol": f"S{i % 3}", "price": 100 + i} for i in range(30)],
    }


#: topic -> (a record with a wrong or missing field, the reason expected)
WRONG_FIELDS = {
    "logins": ({"ip": "192.0.2.1", "user": "u"}, "field 'success' is missing"),
    "sensor-readings": ({"sensor_id": "s1", "temperature": "hot"}, "field 'temperature' must be a number"),
    "transactions": (
        {"txn_id": "t", "card_id": "c", "amount": -5},
        "field 'amount'=-5.0 must not be negative",
    ),
    "stock-prices": ({"symbol": 7, "price": 1.0}, "field 'symbol' must be a string"),
}


def _json_bads(topic: str, good: dict[str, Any], now: float) -> list[tuple[str, bytes | None, str]]:
    """(kind, value, expected reason) of every bad kind for a JSON topic."""
    wrong, wrong_reason = WRONG_FIELDS[topic]
    padding = "x" * (MAX_RECORD_BYTES + 1000)
    return [
        ("malformed JSON", b'{"ts": 1, "ip": "192.0.2.1",', "malformed JSON"),
        ("not a JSON object", b"[1, 2, 3]", "value must be a JSON object, got list"),
        ("non-UTF-8", b'{"ip": "\xff\xfe"}', "value is not UTF-8 text"),
        ("wrong fields", orjson.dumps({"ts": now, **wrong}), wrong_reason),
        ("wrong ts", orjson.dumps({**good, "ts": now * 1000}), "looks like milliseconds"),
        ("unknown schema id", _frame(UNKNOWN_ID, b"\x06ann\x3e"), "value is not UTF-8 text"),
        ("corrupt Avro", _frame(1, b"\x06an"), "malformed JSON"),
        (
            "oversized",
            orjson.dumps({"ts": now, "pad": padding}),
            "exceeds STREAMAPP_MAX_RECORD_BYTES=1048576",
        ),
        ("null", None, "empty record value (null)"),
    ]


def _metric(url: str, name: str) -> dict[str, float]:
    """{topic label: value} of one labelled counter on /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = {}
    for match in re.finditer(rf'^{name}\{{topic="([^"]+)"\}} ([0-9.e+]+)$', text, re.M):
        found[match.group(1)] = float(match.group(2))
    return found


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamapp.cli", *args], env=env, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


async def test_mixed_stream_every_record_processed_or_dead_lettered_with_its_reason(
    kafka_bootstrap, schema_registry_url, names, worker_factory
):
    worker = worker_factory(STREAMAPP_SCHEMA_REGISTRY_URL=schema_registry_url)
    now = time.time()
    rng = random.Random(5)
    users = names.topic("users")
    v1, v2 = bundled_schema("user-v1"), bundled_schema("user-v2")

    # what goes to each topic: (kind, value, expected reason or None for a good record)
    plan: dict[str, list[tuple[str, bytes | None, str | None]]] = {}
    async with AvroProducer(kafka_bootstrap, schema_registry_url) as avro:
        good_users = [await avro.serialize(users, {"name": f"user{i}", "age": 20 + i}, v1) for i in range(15)]
        good_users += [
            await avro.serialize(users, {"name": f"user{i}", "age": 50 + i, "email": f"u{i}@x"}, v2)
            for i in range(10, 25)
        ]
        id_v1, _ = await avro.schema_id(f"{users}-value", v1)
        id_v2, _ = await avro.schema_id(f"{users}-value", v2)
        id_pet, _ = await avro.schema_id(f"{names.prefix}pets-value", PET)
    plan["users"] = [("good", value, None) for value in good_users] + [
        ("malformed JSON", b'{"name": "ann", "age":', "not Confluent Avro: magic byte is 0x7b"),
        ("non-UTF-8 bytes", b"\xff\xfe\xfd\xfc\xfb\xfa", "not Confluent Avro: magic byte is 0xff"),
        (
            "non-UTF-8 in a string",
            _frame(id_v1, b"\x04\xff\xfe\x3e"),
            f"corrupt Avro body for schema id {id_v1}",
        ),
        (
            "schema of another subject",  # a Pet has no age: only ids of the users subject are read
            encode_record(id_pet, parse_schema(PET), {"name": "rex"}),
            f"schema id {id_pet} is not registered under subject {users}-value",
        ),
        ("wrong field", encode_record(id_v1, parse_schema(v1), {"name": "ann", "age": -3}), "outside 0..150"),
        ("empty name", encode_record(id_v1, parse_schema(v1), {"name": "", "age": 3}), "must not be empty"),
        ("unknown schema id", _frame(UNKNOWN_ID, b"\x06ann\x3e"), f"unknown schema id {UNKNOWN_ID}"),
        ("truncated Avro", _frame(id_v1, b"\x06an"), "ends before the record does"),
        ("bad union branch", _frame(id_v2, b"\x06ann\x3e\x0e"), f"corrupt Avro body for schema id {id_v2}"),
        ("trailing bytes", _frame(id_v1, b"\x06ann\x3e\x00"), "1 bytes left after the record"),
        ("header only", b"\x00\x00\x00", "shorter than the 5-byte header"),
        (
            "oversized",
            encode_record(id_v1, parse_schema(v1), {"name": "n" * (MAX_RECORD_BYTES + 10), "age": 3}),
            "exceeds STREAMAPP_MAX_RECORD_BYTES",
        ),
        ("null", None, "empty record value (null)"),
    ]
    for topic, goods in _json_goods(now).items():
        plan[topic] = [("good", orjson.dumps(g), None) for g in goods] + _json_bads(topic, goods[0], now)
    # a good record just under the size limit is processed
    near_limit = orjson.dumps({"ts": now, "ip": "192.0.2.250", "user": "big", "success": False, "pad": ""})
    near_limit = near_limit.replace(
        b'"pad":""', b'"pad":"' + b"p" * (MAX_RECORD_BYTES - len(near_limit)) + b'"'
    )
    assert len(near_limit) == MAX_RECORD_BYTES
    plan["logins"].append(("good", near_limit, None))

    # produce everything shuffled, half with keys; remember where each record landed
    sent: dict[tuple[str, int, int], tuple[str, bytes | None, bytes | None, str | None]] = {}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=4 * MAX_RECORD_BYTES)
    await producer.start()
    try:
        for topic, records in plan.items():
            rng.shuffle(records)
            futures = []
            for n, (kind, value, reason) in enumerate(records):
                key = f"k{n}".encode() if n % 2 or value is None else None  # Kafka needs one of them
                futures.append(
                    (kind, key, value, reason, await producer.send(names.topic(topic), value, key=key))
                )
            for kind, key, value, reason, future in futures:
                meta = await future
                sent[(meta.topic, meta.partition, meta.offset)] = (kind, key, value, reason)
    finally:
        await producer.stop()
    produced = Counter(t for t, _, _ in sent)
    bad_expected = Counter(t for (t, _, _), (_, _, _, reason) in sent.items() if reason is not None)
    good_expected = {names.topic(t): sum(1 for _, _, r in recs if r is None) for t, recs in plan.items()}
    assert sum(bad_expected.values()) == 13 + 4 * 9

    # every bad record is in dead-letters, byte for byte, with its reason and origin
    dead_topic = names.topic("dead-letters")
    await read_until(
        kafka_bootstrap, dead_topic, lambda recs: len(recs) >= sum(bad_expected.values()), within=90
    )
    letters = await read_all(kafka_bootstrap, dead_topic, settle=2.0)
    dead = Counter()
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers}
        origin = (
            headers["x-source-topic"],
            int(headers["x-source-partition"]),
            int(headers["x-source-offset"]),
        )
        kind, key, value, reason = sent[origin]
        assert reason is not None, f"a good {origin} record was dead-lettered: {headers['x-error']}"
        assert reason in headers["x-error"], (kind, headers["x-error"])
        assert (letter.key, letter.value) == (key, value), f"{kind}: not byte for byte"
        dead[origin[0]] += 1
    assert dead == bad_expected  # each bad record exactly once

    # every good record is processed (the worker went on past every bad one)
    def processed() -> dict[str, float]:
        by_source = _metric(worker.url, "streamapp_events_total")
        return {names.topic(t): by_source.get(t, 0.0) for t in plan}

    for _ in range(120):
        if processed() == good_expected:
            break
        await asyncio.sleep(0.5)
    assert processed() == good_expected
    for topic in produced:
        assert processed()[topic] + dead[topic] == produced[topic], topic
    assert _metric(worker.url, "streamapp_dead_letters_total") == {t: float(n) for t, n in dead.items()}
    # and the views show them
    assert worker.wait_for("/users/user24", lambda s, b: s == 200)["record"]["email"] == "u24@x"
    assert worker.wait_for("/users/user3", lambda s, b: s == 200)["schema_id"] == id_v1
    assert worker.get("/users/ann")[0] == 404  # no bad record made it into state

    # -- streamapp dlq list / resubmit ----------------------------------------------------------
    env = {
        **os.environ,
        "STREAMAPP_BROKER": f"kafka://{kafka_bootstrap}",
        "STREAMAPP_TOPIC_PREFIX": names.prefix,
        "STREAMAPP_APP_ID": names.app_id,
    }
    listed = _cli("dlq", "list", "--topic", "users", "--limit", "1000", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == bad_expected[users]
    assert {r["source"].split("[")[0] for r in rows} == {users}
    assert any(f"unknown schema id {UNKNOWN_ID}" in r["error"] for r in rows)
    shown = _cli("dlq", "list", "--limit", "3", env=env)
    assert shown.returncode == 0 and shown.stdout.count("x-error: ") == 3, shown.stdout

    unknown = next(r for r in rows if "unknown schema id" in r["error"])
    partition, offset = unknown["position"].split(":")
    again = _cli("dlq", "resubmit", "--partition", partition, "--offset", offset, env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"{partition}:{offset} -> {users}["), again.stdout
    target = re.search(r"-> (\S+)\[(\d+)\]@(\d+)", again.stdout)
    assert target is not None
    resubmitted = (target.group(1), int(target.group(2)), int(target.group(3)))
    # the worker reads it again and dead-letters it again, with its new source position
    before = len(letters)
    letters = await read_until(kafka_bootstrap, dead_topic, lambda recs: len(recs) > before, within=60)
    found = [
        r for r in letters
        if (dict(r.headers).get("x-source-offset") == str(resubmitted[2]).encode()
            and dict(r.headers).get("x-source-topic") == users.encode()
            and dict(r.headers).get("x-source-partition") == str(resubmitted[1]).encode())
    ]  # fmt: skip
    assert len(found) == 1, [dict(r.headers) for r in letters[before:]]
    origin_value = next(
        v for (t, _, _), (k, _, v, r) in sent.items() if r and "unknown schema id" in r and t == users
    )
    assert found[0].value == origin_value
    assert dict(found[0].headers)["x-resubmitted-from"] == f"{dead_topic}:{partition}:{offset}".encode()

    every = _cli("dlq", "resubmit", "--all", "--topic", "stock-prices", env=env)
    assert every.returncode == 0, every.stderr
    assert len(every.stdout.splitlines()) == bad_expected[names.topic("stock-prices")]
    nothing = _cli("dlq", "resubmit", "--offset", "999999", env=env)
    assert nothing.returncode == 1 and "no dead letter at offset 999999" in nothing.stderr
    neither = _cli("dlq", "resubmit", env=env)
    assert neither.returncode == 2 and "--all" in neither.stderr
