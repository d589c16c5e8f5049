"""A hostile producer on every topic the app reads, internal ones included: detection goes on.

A seeded generator sends hundreds of well-formed but hostile records of every class (faust's own
keys as ids, control characters, times decades ahead given every way, huge and extreme numbers,
long ids, deep nesting, huge arrays, duplicate keys, wrong types, odd Unicode) to the input topics,
and forged records to the internal topics (the by-entity topics of the stock prices and users, and
the detections' ``<app id>-detection-events``) and to the changelogs, interleaved with a control
stream whose alerts and views are known. Afterwards the worker is the same live process, the
controls are exact, and every hostile record is accounted for: a view shows it, or it is a dead
letter (by its source coordinates) with a reason. Restarts, with the same and with a fresh data
dir, recover.
"""

# ruff: noqa: E501  (tables of hostile records read best one per line)
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streamapp.detections.shipped import SHIPPED_DIR
from streamapp.detections.spec import load_file
from streamapp.runtime.producer import key_partition
from streamapp.schema.avro import bundled_schema
from streamapp.schema.avro_producer import AvroProducer
from tests.integration.kafka_io import read_all, read_until

pytestmark = pytest.mark.integration

GRACE = 15.0
EVENT_CLOCK_KEY = b"__faust\x00streamapp-event-clock__"
FAUST_OFFSET_KEY = b"__faust\x00offset__"
RESERVED = ["__faust\x00streamapp-event-clock__", "__faust_offset__", "__faust\x00offset__", "__faust"]
CONTROL_CHARS = ["\x00", "\n", "\r", "\x1b", "\x7f", "\x85", "\u2028"]
ODD_UNICODE = ["Zoë 🧑‍💻", "\u202eevil", "e\u0301\u0301\u0301", "Ⅻ ﷽", "a\u200bb", " spaced ", 'q"uo\\te']
#: ids that are characters of a URL's path syntax: each view still finds them (percent-encoded)
ODD_PATHS = ["{key}{0}%s%n", "../../etc/passwd", "a/b?c=d#e", "100%"]
#: the table of the per-IP failed logins: the brute_force spec's states
IP_TABLE = "detection-state"


@dataclass
class Sent:
    """One record to produce, what must become of it, and where it landed."""

    topic: str
    key: bytes | None
    value: bytes | None
    fate: str  # "dead": a dead letter; "view": a view shows it (path); "control"; "changelog"
    view: str | None = None
    timestamp_ms: int | None = None
    coords: tuple[str, int, int] | None = None
    #: the partition to produce to (None: the producer's, by the key)
    partition: int | None = None


def _json(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj)


def _input_records(now: float, rng: random.Random, names: Any) -> list[Sent]:
    """Hostile records of every class for the four JSON input topics."""
    out: list[Sent] = []
    logins, readings = names.topic("logins"), names.topic("sensor-readings")
    txns, prices = names.topic("transactions"), names.topic("stock-prices")
    n = iter(range(10**6))

    def ts() -> float:
        return now - rng.uniform(2, 10)

    bad_ids = RESERVED + [f"id{c}x" for c in CONTROL_CHARS] + ["x" * 257]
    for bad in bad_ids:  # every id field of every topic
        out.append(
            Sent(
                logins, None, _json({"ts": ts(), "ip": bad, "user": f"h{next(n)}", "success": False}), "dead"
            )
        )
        out.append(
            Sent(logins, None, _json({"ts": ts(), "ip": f"h{next(n)}", "user": bad, "success": True}), "dead")
        )
        out.append(Sent(readings, None, _json({"ts": ts(), "sensor_id": bad, "temperature": 20}), "dead"))
        out.append(
            Sent(
                txns, None, _json({"ts": ts(), "txn_id": f"h{next(n)}", "card_id": bad, "amount": 1}), "dead"
            )
        )
        out.append(
            Sent(
                txns, None, _json({"ts": ts(), "txn_id": bad, "card_id": f"h{next(n)}", "amount": 1}), "dead"
            )
        )
        out.append(Sent(txns, None, _json(
            {"ts": ts(), "txn_id": f"h{next(n)}", "card_id": f"h{next(n)}", "amount": 1, "merchant": bad}
        ), "dead"))  # fmt: skip
        out.append(Sent(prices, None, _json({"ts": ts(), "symbol": bad, "price": 1}), "dead"))
    far = now + 86400 * 365 * 60
    for when in (far, "2090-01-01T00:00:00+00:00", now + 3600, 1e300, now * 1000):  # numbers, ISO, ms
        out.append(
            Sent(
                logins, None, _json({"ts": when, "ip": f"h{next(n)}", "user": "u", "success": False}), "dead"
            )
        )
        out.append(
            Sent(readings, None, _json({"ts": when, "sensor_id": f"h{next(n)}", "temperature": 1}), "dead")
        )
        out.append(
            Sent(
                txns, None, _json({"ts": when, "txn_id": "t", "card_id": f"h{next(n)}", "amount": 1}), "dead"
            )
        )
        out.append(Sent(prices, None, _json({"ts": when, "symbol": f"h{next(n)}", "price": 1}), "dead"))
    for topic, body in (  # no ts: the record timestamp, 50 minutes ahead (the broker takes up to 1 h)
        (logins, {"ip": f"h{next(n)}", "user": "u", "success": False}),
        (readings, {"sensor_id": f"h{next(n)}", "temperature": 1}),
        (txns, {"txn_id": "t", "card_id": f"h{next(n)}", "amount": 1}),
        (prices, {"symbol": f"h{next(n)}", "price": 1}),
    ):
        out.append(Sent(topic, None, _json(body), "dead", timestamp_ms=int((now + 3000) * 1000)))
    for amount in (1e300, 1.7e308, 1e9 + 1, -1):
        out.append(
            Sent(
                txns,
                None,
                _json({"ts": ts(), "txn_id": "t", "card_id": f"h{next(n)}", "amount": amount}),
                "dead",
            )
        )
    for price in (1e300, 1.7e308, 1e9 + 1, 0, -5):
        out.append(Sent(prices, None, _json({"ts": ts(), "symbol": f"h{next(n)}", "price": price}), "dead"))
    for temperature in (1e300, 10000.5, -300):
        out.append(
            Sent(
                readings,
                None,
                _json({"ts": ts(), "sensor_id": f"h{next(n)}", "temperature": temperature}),
                "dead",
            )
        )
    # wrong types
    for body in (
        {"ts": True, "ip": f"h{next(n)}", "user": "u", "success": False},
        {"ts": ts(), "ip": 12, "user": "u", "success": False},
        {"ts": ts(), "ip": f"h{next(n)}", "user": ["u"], "success": False},
        {"ts": ts(), "ip": f"h{next(n)}", "user": "u", "success": "no"},
        {"ts": {"$date": 1}, "ip": f"h{next(n)}", "user": "u", "success": False},
    ):
        out.append(Sent(logins, None, _json(body), "dead"))
    out.append(
        Sent(
            txns, None, _json({"ts": ts(), "txn_id": "t", "card_id": f"h{next(n)}", "amount": "1e3"}), "dead"
        )
    )
    out.append(Sent(prices, None, _json({"ts": ts(), "symbol": f"h{next(n)}", "price": None}), "dead"))
    out.append(
        Sent(readings, None, _json({"ts": ts(), "sensor_id": f"h{next(n)}", "temperature": False}), "dead")
    )
    # not JSON objects, not UTF-8, too deep, too large, lone surrogates
    for raw in (b"", b"null", b"[1,2]", b"\xff\xfe\x00", b'{"ts": 1', b'"\\ud800"', b"[" * 2000 + b"]" * 2000,
                b'{"ip": "\\ud800", "user": "u", "success": false, "ts": 1}'):  # fmt: skip
        out.append(Sent(logins, None, raw, "dead"))
    out.append(Sent(logins, b"k", None, "dead"))  # a tombstone on an input topic
    # extreme but allowed: processed, and a view shows each
    for odd in ODD_UNICODE + ODD_PATHS + ["x" * 256]:
        out.append(
            Sent(
                logins,
                None,
                _json({"ts": ts(), "ip": odd, "user": odd, "success": False}),
                "view",
                f"/ips/{quote(odd, safe='')}",
            )
        )
    for temperature in (10000, -273.15, 0, 5e-324):
        sensor = f"hs{next(n)}"
        out.append(
            Sent(
                readings,
                None,
                _json({"ts": ts(), "sensor_id": sensor, "temperature": temperature}),
                "view",
                f"/sensors/{sensor}",
            )
        )
    for amount in (1e9, 0, 5e-324, 999_999_999.99):
        card = f"hc{next(n)}"
        out.append(
            Sent(
                txns,
                None,
                _json({"ts": ts(), "txn_id": "t", "card_id": card, "amount": amount, "merchant": "Zoë 🧑‍💻"}),
                "view",
                f"/cards/{card}",
            )
        )
    for price in (1e9, 5e-324, 1e-300):
        symbol = f"HS{next(n)}"
        out.append(
            Sent(
                prices,
                None,
                _json({"ts": ts(), "symbol": symbol, "price": price}),
                "view",
                f"/stocks/{symbol}",
            )
        )
    deep = "[" * 500 + "]" * 500
    for extra in (
        deep,
        orjson.dumps(list(range(100_000))).decode(),
        orjson.dumps(["s" * 100] * 3000).decode(),
    ):
        ip = f"hx{next(n)}"
        raw = f'{{"ts": {ts()}, "ip": "{ip}", "user": "u", "success": false, "x": {extra}}}'.encode()
        out.append(Sent(logins, None, raw, "view", f"/ips/{ip}"))
    ip, last = f"hd{next(n)}", f"hd{next(n)}"  # duplicate keys: the last one counts (as orjson reads it)
    raw = f'{{"ts": {ts()}, "ip": "{ip}", "ip": "{last}", "user": "u", "success": false, "ts": {ts()}}}'
    out.append(Sent(logins, None, raw.encode(), "view", f"/ips/{last}"))
    big = f"hb{next(n)}"  # just within STREAMAPP_MAX_RECORD_BYTES: its forwarded envelope is larger
    body = _json({"ts": ts(), "ip": big, "user": "u", "success": False, "pad": ""})
    pad = b"7" * (1_048_000 - len(body))
    out.append(Sent(logins, None, body[:-2] + pad + b'"}', "view", f"/ips/{big}"))
    big = f"hq{next(n)}"  # escaped quotes and backslashes: the envelope's copy of it is twice as large
    body = _json({"ts": ts(), "ip": big, "user": "u", "success": False, "pad": ""})
    pad = b'\\"' * ((1_048_576 - len(body)) // 2)  # exactly STREAMAPP_MAX_RECORD_BYTES at most
    out.append(Sent(logins, None, body[:-2] + pad + b'"}', "view", f"/ips/{big}"))
    for _ in range(80):  # unkeyed spam of valid records of random hostile-looking ids
        ip = "".join(rng.choice("ab🧑‍💻é%/?#&_ .:") for _ in range(rng.randint(1, 40)))
        if ip.startswith("_") or ip.strip("./") == "" or "/" in ip:
            ip = "r" + ip.replace("/", "")
        out.append(
            Sent(
                logins,
                None,
                _json({"ts": ts(), "ip": ip, "user": "u", "success": False}),
                "view",
                f"/ips/{quote(ip, safe='')}",
            )
        )
    return out


BY_ENTITY = {  # by-entity topic -> (table, view, a valid forwarded event for an id)
    "prices-by-symbol": ("prices-by-symbol", "stocks", lambda i, ts: {"ts": ts, "symbol": i, "price": 2.5}),
    "users-by-name": ("users-by-name", "users", lambda i, ts: {
        "ts": ts, "name": i, "age": 33, "schema_id": 1, "fields": {"name": i, "age": 33}}),
}  # fmt: skip


def _internal_records(now: float, app_id: str) -> list[Sent]:
    """Forged records on the by-entity topics: dead letters, except well-formed events (processed)."""
    out: list[Sent] = []
    for short, (_, view, event) in BY_ENTITY.items():
        topic = f"{app_id}-{short}"

        def env(entity: str, src: Any = (97, 1), event: Any = event, **changes: Any) -> bytes:
            return _json(
                {
                    "src": list(src) if isinstance(src, tuple) else src,
                    "e": {**event(entity, now - 5), **changes},
                }
            )

        for key, value in (
            (b"fk1", b"not json at all"),
            (b"fk2", None),
            (b"fk3", b"[1, 2, 3]"),
            (b"fk4", _json({"e": event("fk4", now - 5)})),
            (b"fk5", env("fk5", src=[0, -1])),
            (b"fk6", env("fk6", src=[0, "7"])),
            (b"fk7", env("fk7", ts=now + 86400 * 365 * 60)),  # would move the event clock
            (b"fk8", env("fk8", ts="soon")),
            (None, env("none")),
            (b"", env("")),
            (b"\xff\xfe\xfd", env("bin")),
            (EVENT_CLOCK_KEY, env(EVENT_CLOCK_KEY.decode())),
            (FAUST_OFFSET_KEY, env(FAUST_OFFSET_KEY.decode())),
            (b"nul\x00key", env("nul\x00key")),
            (b"x" * 300, env("x" * 300)),
        ):
            out.append(Sent(topic, key, value, "dead"))
        if short == "prices-by-symbol":
            out.append(Sent(topic, b"fk9", env("fk9", price=1e300), "dead"))
        if short == "users-by-name":
            out.append(Sent(topic, b"fk9", env("fk9", age="33"), "dead"))
        # a well-formed forwarded event nobody can tell from the app's own
        out.append(Sent(topic, b"forged-ok", env("forged-ok", src=(98, 5)), "view", f"/{view}/forged-ok"))
    return out + _detection_event_records(now, app_id)


#: the views the specs serve when they run -> (the detection, a valid event of an id: its spec's fields)
SPEC_EVENTS = {
    "ips": ("brute_force", lambda i, ts: {"ts": ts, "ip": i, "user": "u", "success": False}),
    "sensors": ("high_temperature", lambda i, ts: {"ts": ts, "sensor_id": i, "temperature": 21.5}),
    "cards": ("card_velocity", lambda i, ts: {"ts": ts, "txn_id": "t", "card_id": i, "amount": 3.0}),
}


def _detection_event_records(now: float, app_id: str) -> list[Sent]:
    """Forged records on the spec engine's internal topic: dead letters, except well-formed events."""
    topic = f"{app_id}-detection-events"
    out: list[Sent] = []
    for view, (name, fields) in SPEC_EVENTS.items():
        prefix = name.encode() + b"\x00"

        def env(
            entity: str, src: Any = (97, 1), fields: Any = fields, name: str = name, **changes: Any
        ) -> bytes:
            f = {**fields(entity, now - 5), **changes}
            return _json({"n": name, "src": list(src) if isinstance(src, tuple) else src, "ts": f["ts"], "f": f,
                          "raw": "{}"})  # fmt: skip

        for key, value in (
            (prefix + b"fk1", b"not json at all"),
            (prefix + b"fk2", None),
            (prefix + b"fk3", b"[1, 2, 3]"),
            (prefix + b"fk4", _json({"e": fields("fk4", now - 5)})),
            (prefix + b"fk5", env("fk5", src=[0, -1])),
            (prefix + b"fk6", env("fk6", src=[0, "7"])),
            (prefix + b"fk7", _json({**orjson.loads(env("fk7")), "ts": now + 86400 * 365 * 60})),  # the clock
            (prefix + b"fk8", env("fk8", ts="soon")),
            (prefix + b"fk9", env("fk9", ts=now + 86400 * 365 * 60)),
            (prefix + b"fk10", env("other")),  # its key is not its event's
            (prefix + b"fk11", _json({"tick": now + 86400 * 365 * 60, "flush": True})),  # would judge all
            (prefix + b"fk12", _json({"tick": "soon"})),
            (None, env("none")),
            (b"", env("")),
            (prefix, env("")),
            (b"no-separator", env("no-separator")),
            (b"\xff\xfe\x00\xfd", env("bin")),
            (prefix + b"\xff\xfe\xfd", env("bin")),
            (EVENT_CLOCK_KEY, env(EVENT_CLOCK_KEY.decode())),
            (FAUST_OFFSET_KEY, env(FAUST_OFFSET_KEY.decode())),
            (prefix + b"nul\x00key", env("nul\x00key")),
            (prefix + b"x" * 300, env("x" * 300)),
            (b"no_such_detection\x00fk13", env("fk13")),
        ):
            out.append(Sent(topic, key, value, "dead"))
        if name == "brute_force":
            out.append(Sent(topic, prefix + b"fk14", env("fk14", success="no"), "dead"))
        if name == "high_temperature":
            out.append(Sent(topic, prefix + b"fk14", env("fk14", temperature="hot"), "dead"))
        if name == "card_velocity":
            out.append(Sent(topic, prefix + b"fk14", env("fk14", amount=1e300), "dead"))
        # a well-formed forwarded event nobody can tell from the app's own
        out.append(
            Sent(topic, prefix + b"forged-ok", env("forged-ok", src=(98, 5)), "view", f"/{view}/forged-ok")
        )
    return out


def _changelog_records(app_id: str) -> list[Sent]:
    """Forged records on every table's changelog (read only by a restart's recovery)."""
    out = []
    for table, *_ in BY_ENTITY.values():
        topic = f"{app_id}-{table}-changelog"
        for key, value in (
            (b"\xff\xfe", None), (b"\xff\xfe", b"junk"), (b"cl-junk", b"\x00not json"),
            (b"cl-list", b"[1, 2]"), (b"cl-shape", _json({"buckets": "x", "windows": 5, "failures": {}, "recent": 1,
                                                         "src": 3, "clock": "late", "ts": "x", "last": [1]})),
            (FAUST_OFFSET_KEY, b"not an offset"), (EVENT_CLOCK_KEY, b"not a clock"),
        ):  # fmt: skip
            out.append(Sent(topic, key, value, "changelog"))
    # the specs' states: keys of the running detections, and of none
    topic = f"{app_id}-detection-state-changelog"
    for name in ("brute_force", "card_velocity", "no_such_detection"):
        prefix = name.encode() + b"\x00"
        for key, value in (
            (prefix + b"cl-junk", b"\x00not json"), (prefix + b"cl-list", b"[1, 2]"),
            (prefix + b"cl-shape", _json({"shape": 5, "clock": "late", "pending": "x", "src": 3})),
            (prefix + b"\xff\xfe", b"junk"),
        ):  # fmt: skip
            out.append(Sent(topic, key, value, "changelog", partition=_state_partition(key)))
    for key, value in (
        (b"\xff\xfe", None),
        (FAUST_OFFSET_KEY, b"not an offset"),
        (EVENT_CLOCK_KEY, b"x"),
    ):
        out.append(Sent(topic, key, value, "changelog"))
    return out


def _state_partition(key: bytes) -> int:
    """The partition of a detection-state key (``name NUL entity``, or an entity): its entity's, of
    the conftest's STREAMAPP_PARTITIONS (4), as the spec engine keeps it."""
    return key_partition(key.rpartition(b"\x00")[2], 4)


def _poisoned_spec_states(app_id: str, shapes: dict[str, str]) -> list[Sent]:
    """Forged states of the running specs' own shape, their clocks decades ahead and their held
    events junk: such a clock must neither move the detection's watermark nor poison the key."""
    topic = f"{app_id}-detection-state-changelog"
    ahead = time.time() + 86400 * 365 * 60
    return [
        Sent(topic, f"{name}\x00cl-clock".encode(),
             _json({"shape": shapes[name], "clock": ahead, "pending": [["x"]], "src": {}, "n": "x"}), "changelog",
             partition=_state_partition(b"cl-clock"))
        for name in ("brute_force", "card_velocity")
    ]  # fmt: skip


def _controls(now: float, names: Any) -> tuple[list[Sent], dict[tuple[str, str], int]]:
    """Known traffic: unkeyed over all partitions, within the grace; and the alerts it must give."""
    logins, readings = names.topic("logins"), names.topic("sensor-readings")
    txns, prices = names.topic("transactions"), names.topic("stock-prices")
    t0 = now - 12
    out = [Sent(logins, None, _json({"ts": t0 + i, "ip": "198.51.100.77", "user": "ctl-bf", "success": False}), "control")
           for i in range(6)]  # fmt: skip
    out += [Sent(logins, None, _json({"ts": t0 + i, "ip": f"198.51.100.{80 + i}", "user": "ctl-victim", "success": False}), "control")
            for i in range(3)]  # fmt: skip
    out.append(
        Sent(
            logins,
            None,
            _json({"ts": t0 + 5, "ip": "198.51.100.90", "user": "ctl-victim", "success": True}),
            "control",
        )
    )
    out += [Sent(readings, None, _json({"ts": t0 + i, "sensor_id": "ctl-sensor", "temperature": 20.0 + i}), "control")
            for i in range(5)]  # fmt: skip
    out.append(
        Sent(readings, None, _json({"ts": t0 + 6, "sensor_id": "ctl-hot", "temperature": 150.0}), "control")
    )
    out += [Sent(txns, None, _json({"ts": t0 + i, "txn_id": f"ct{i}", "card_id": "ctl-card", "amount": 10.0}), "control")
            for i in range(6)]  # fmt: skip
    out += [
        Sent(prices, None, _json({"ts": t0 + i, "symbol": "CTL", "price": 100.0 + i}), "control")
        for i in range(5)
    ]
    alerts = {("brute_force", "198.51.100.77"): 1, ("account_takeover", "ctl-victim"): 1,
              ("high_temperature", "ctl-hot"): 1, ("card_velocity", "ctl-card"): 1}  # fmt: skip
    return out, alerts


async def _produce(bootstrap: str, records: list[Sent]) -> None:
    """Produce in this order; note where each landed."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 * 1024 * 1024, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(
                r.topic, value=r.value, key=r.key, timestamp_ms=r.timestamp_ms, partition=r.partition
            )
            for r in records
        ]
        for record, meta in zip(records, await asyncio.gather(*futures), strict=True):
            record.coords = (meta.topic, meta.partition, meta.offset)
    finally:
        await producer.stop()


def _views(worker: Any) -> dict[str, Any]:
    """The control views, without the parts relative to the current time."""
    ip = worker.get("/ips/198.51.100.77")[1]
    sensor = worker.get("/sensors/ctl-sensor")[1]
    card = worker.get("/cards/ctl-card")[1]
    stock = worker.get("/stocks/CTL")[1]
    user = worker.get("/users/ctl-user")[1]
    return {
        "ip": [w["failed"] for w in ip.get("windows", [])],
        "sensor": (sensor.get("last"), [(w["count"], w["min"], w["max"]) for w in sensor.get("windows", [])]),
        "card": (card.get("count"), card.get("mean_amount")),
        "stock": (stock.get("last"), stock.get("ts")),
        "user": (user.get("record"), user.get("schema_id")),
    }


async def test_hostile_producer_on_every_topic_never_stops_detection(
    kafka_bootstrap, schema_registry_url, names, worker_factory
):
    started = time.monotonic()
    env = {"STREAMAPP_SCHEMA_REGISTRY_URL": schema_registry_url, "STREAMAPP_GRACE_SECONDS": str(GRACE)}
    worker = worker_factory(**env)
    pid = worker.proc.pid
    now = time.time()
    rng = random.Random(15)
    controls, expected_alerts = _controls(now, names)
    hostile = _input_records(now, rng, names) + _internal_records(now, names.app_id)
    changelog = _changelog_records(names.app_id)
    users = names.topic("users")
    async with AvroProducer(kafka_bootstrap, schema_registry_url) as avro:
        v1 = bundled_schema("user-v1")
        controls.append(
            Sent(users, None, await avro.serialize(users, {"name": "ctl-user", "age": 42}, v1), "control")
        )
        for bad in RESERVED + [f"u{c}x" for c in CONTROL_CHARS]:
            hostile.append(
                Sent(users, None, await avro.serialize(users, {"name": bad, "age": 30}, v1), "dead")
            )
        for age in (-1, 151, 2**31 - 1):
            hostile.append(
                Sent(users, None, await avro.serialize(users, {"name": f"ha{age}", "age": age}, v1), "dead")
            )
        for odd in ODD_UNICODE + ODD_PATHS:
            value = await avro.serialize(users, {"name": odd, "age": 7}, v1)
            hostile.append(Sent(users, None, value, "view", f"/users/{quote(odd, safe='')}"))
        good = await avro.serialize(users, {"name": "hz", "age": 1}, v1)
        for raw in (
            b"",
            b"\x01" + good[1:],
            b"\x00\x7f\xff\xff\xff" + good[5:],
            good[:5] + b"\xff" * 40,
            good[:5],
        ):
            hostile.append(Sent(users, None, raw, "dead"))

    # everything interleaved: controls in their own order among hostile records in random places
    mixed = hostile + changelog
    rng.shuffle(mixed)
    stream: list[Sent] = []
    pending = list(controls)
    for record in mixed:
        stream.append(record)
        if pending and rng.random() < 0.1:
            stream.append(pending.pop(0))
    stream += pending
    await _produce(kafka_bootstrap, stream)
    assert len(hostile) + len(changelog) >= 400, len(hostile) + len(changelog)

    # every control alert exactly once (alert ids are deterministic: no duplicates either)
    def control_alerts(records: list[Any]) -> dict[tuple[str, str], int]:
        found: dict[tuple[str, str], int] = {}
        for record in records:
            alert = orjson.loads(record.value)
            if (alert["kind"], alert["key"]) in expected_alerts:
                found[(alert["kind"], alert["key"])] = found.get((alert["kind"], alert["key"]), 0) + 1
        return found

    await read_until(
        kafka_bootstrap, names.topic("alerts"), lambda recs: control_alerts(recs).keys() == expected_alerts.keys(),
        within=90,
    )  # fmt: skip

    # every hostile record that must be refused is a dead letter, found by its source coordinates
    dead = {r.coords: r for r in hostile if r.fate == "dead"}

    def dead_coords(records: list[Any]) -> dict[tuple[str, int, int], str]:
        found = {}
        for record in records:
            headers = dict(record.headers)
            coords = (
                headers["x-source-topic"].decode(), int(headers["x-source-partition"]),
                int(headers["x-source-offset"]),
            )  # fmt: skip
            found[coords] = headers["x-error"].decode()
        return found

    letters = await read_until(
        kafka_bootstrap,
        names.topic("dead-letters"),
        lambda recs: dead.keys() <= dead_coords(recs).keys(),
        within=60,
    )
    reasons = dead_coords(letters)
    missing = [dead[c] for c in dead if c not in reasons]
    assert not missing, missing[:5]
    assert all(reasons[c] for c in dead), "every dead letter has a reason"
    for coords, letter in zip(
        [c for c in dead_coords(letters)], letters, strict=True
    ):  # byte for byte as received
        if coords in dead:
            assert letter.value == dead[coords].value and letter.key == dead[coords].key, (
                coords,
                reasons[coords],
            )
    control_coords = {r.coords for r in controls}
    assert not control_coords & reasons.keys(), "no control record is a dead letter"
    views = {r.coords: r for r in hostile if r.fate == "view"}
    assert not views.keys() & reasons.keys(), [reasons[c] for c in views.keys() & reasons.keys()]

    # every hostile record that is valid is processed: a view shows it
    for record in views.values():
        assert record.view is not None
        worker.wait_for(record.view, lambda status, body: status == 200, timeout=30)

    # the control views are exact
    def exact(v: dict[str, Any]) -> bool:
        return (
            v["ip"] and sum(v["ip"]) == 6 and v["sensor"][0] == {"ts": now - 12 + 4, "temperature": 24.0}
            and sum(c for c, _, _ in v["sensor"][1]) == 5 and v["card"] == (6, 10.0)
            and v["stock"] == (104.0, now - 12 + 4) and v["user"] == ({"name": "ctl-user", "age": 42}, v["user"][1])
        )  # fmt: skip

    deadline = time.monotonic() + 30
    while not exact(before := _views(worker)):
        assert time.monotonic() < deadline, before
        await asyncio.sleep(0.3)
    assert worker.get("/ips/198.51.100.77")[1]["failed_logins_60s"] == 6
    alerts = await read_all(kafka_bootstrap, names.topic("alerts"), settle=1.0)
    assert control_alerts(alerts) == expected_alerts
    assert not await read_all(kafka_bootstrap, names.topic("late-events"), settle=0.0)

    # the same live process, no traceback
    assert worker.proc.pid == pid and worker.proc.poll() is None
    assert worker.get("/live")[0] == 200
    assert "Traceback" not in worker.log_text(), worker.log_tail(80)

    # a restart with the same data dir, then one with a fresh data dir (recovering every forged
    # changelog record): ready, the same views, no crash
    worker.restart().wait_ready()
    worker.wait_for("/ips/198.51.100.77", lambda status, body: status == 200, timeout=30)
    assert _views(worker) == before
    # forged states of the running specs' shapes, recovered by the fresh worker below
    shapes = {row["name"]: row["state_shape"] for row in worker.get("/detections")[1]["detections"]}
    await _produce(kafka_bootstrap, _poisoned_spec_states(names.app_id, shapes))
    worker.stop()
    fresh = worker_factory(**env)
    fresh.wait_for("/ips/198.51.100.77", lambda status, body: status == 200, timeout=30)
    assert _views(fresh) == before
    # the forged states are replaced by fresh ones as soon as their keys get an event
    forged = ("cl-junk", "cl-list", "cl-shape", "cl-clock")
    ts = time.time() - 1
    await _produce(kafka_bootstrap, [
        Sent(names.topic("logins"), None, _json({"ts": ts, "ip": key, "user": key, "success": False}), "control")
        for key in forged
    ] + [
        Sent(names.topic("transactions"), None, _json({"ts": ts, "txn_id": "t", "card_id": key, "amount": 5.0}), "control")
        for key in forged
    ])  # fmt: skip
    for key in forged:
        fresh.wait_for(
            f"/ips/{key}",
            lambda status, body: status == 200 and sum(w["failed"] for w in body["windows"]) == 1,
        )
        fresh.wait_for(f"/cards/{key}", lambda status, body: status == 200 and body["count"] == 1)
    assert fresh.metric("streamapp_state_resets_total", table=IP_TABLE) >= 1
    assert _views(fresh) == before, "the forged states moved no other key's clock"
    assert fresh.get("/live")[0] == 200
    for log in (worker.log_text(), fresh.log_text()):
        assert "Traceback" not in log, log[-5000:]
    assert time.monotonic() - started < 180


async def test_an_event_clock_poisoned_by_an_older_version_is_repaired_at_start(
    kafka_bootstrap, names, worker_factory
):
    """The brute_force states keep their clock per key: a poisoned one is left out of the detection's
    watermark at start and replaced by a fresh state at its key's next event."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    changelog = f"{names.app_id}-{IP_TABLE}-changelog"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(changelog, 4, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    ahead = time.time() + 86400 * 365 * 60  # what an older version wrote: 60 years ahead
    # the key's own state, of the running spec's shape, on the key's partition
    shape = load_file(SHIPPED_DIR / "brute_force.yaml").shape
    poisoned = [
        (
            b"brute_force\x00203.0.113.5",
            _json({"shape": shape, "clock": ahead, "pending": []}),
            _state_partition(b"203.0.113.5"),
        )
    ]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for key, value, partition in poisoned:
            await producer.send_and_wait(changelog, value, key=key, partition=partition)
    finally:
        await producer.stop()

    worker = worker_factory()
    now = time.time()
    logins = [{"ts": now - 5 + i / 10, "ip": "203.0.113.5", "user": "u", "success": False} for i in range(3)]
    await _produce(kafka_bootstrap, [Sent(names.topic("logins"), None, _json(v), "control") for v in logins])
    # real events count (with the poisoned clock they were older than the retention: late-events)
    worker.wait_for("/ips/203.0.113.5", lambda status, body: status == 200 and body["failed_logins_60s"] == 3)
    assert not await read_all(kafka_bootstrap, names.topic("late-events"), settle=1.0)
    assert worker.metric("streamapp_state_resets_total", table=IP_TABLE) == len(poisoned)
    resets = [line for line in worker.log_text().splitlines() if f"in table {IP_TABLE} is replaced" in line]
    assert len(resets) == 1 and "event clock" in resets[0], resets
    # the repair reached the changelog: a restart from a fresh data dir repairs nothing
    worker.stop()
    fresh = worker_factory()
    assert "event clock of table" not in fresh.log_text()
    fresh.wait_for("/ips/203.0.113.5", lambda status, body: status == 200 and body["failed_logins_60s"] == 3)
    assert f"in table {IP_TABLE} is replaced" not in fresh.log_text()
