"""The shipped detection specs in running workers alert as their rule modules do (issue 17).

Two workers with STREAMAPP_RULES=none (no shipped detection of their own) get
detections/brute_force.yaml, account_takeover.yaml, card_velocity.yaml and amount_spike.yaml with
`streamapp detections apply`.
Logins and transactions with hostile-looking ids are produced unkeyed over every partition,
shuffled within the grace. The alerts read back from the alerts topic are compared with those
of the rule modules (streamapp.rules) on the same events in event-time order (the reference of
tests/unit/detections/test_shipped_specs.py): each alert once; account takeover's ids, keys,
times and windows and amount spike's whole alerts equal; brute force's and card velocity's number
per key equal, each of them a window that holds more than the threshold (which window alerts
can depend on the arrival order, the rule's too: see _check_stepped).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from streamapp.models import Alert, alert_id_for
from streamapp.runtime.producer.record_batches import key_partition
from tests.integration.conftest import Names, Worker
from tests.integration.kafka_io import produce_spread, read_all, read_until, shuffled
from tests.unit.detections.test_shipped_specs import by_rule, by_rule_run

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
#: no shipped detection runs but those applied
RULES = "none"
LOGIN_SPECS = ("brute_force", "account_takeover")
CARD_SPECS = ("card_velocity", "amount_spike")
SPECS = LOGIN_SPECS + CARD_SPECS
#: the specs' grace (seconds of event time); events are produced in steps narrower than it
GRACE = 60.0
STEP = 45.0
SPAN = 420.0
#: what of an alert does not depend on the arrival order (docs/detections.md): everything of a
#: held one; of a sequence its id, time and window (its value is the failures known when the
#: success alerted). A stepped count's window choice can depend on it (see _check_stepped)
SAME = {
    "account_takeover": ("alert_id", "kind", "key", "ts", "window_start", "window_end", "threshold"),
    "amount_spike": tuple(f.name for f in fields(Alert)),
}

#: well-formed ids (1-256 printable-or-format characters, no control character) that look hostile
HOSTILE = [
    "<script>alert('x')</script>",
    "' OR '1'='1' --; DROP TABLE alerts",
    "{key}{value:.0f}{0}%s%n",
    "Zoë 🧑‍💻 \u202egnp.exe",
    "../../etc/passwd",
    "_not_faust",
    "é" * 256,
]


def _ts(rnd: random.Random, base: float, start: float, spread: float) -> float:
    """A time ``start`` .. ``start + spread`` s after ``base``, in quarter seconds."""
    return base + round((start + rnd.uniform(0, spread)) * 4) / 4


def _distinct_times(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every event at a time of its own (i/4096 s added to the quarter second): two successful
    logins of one user at the same time would raise two alerts with one id, the rule's too."""
    assert len(events) < 1000
    return [{**e, "ts": e["ts"] + (i + 1) / 4096} for i, e in enumerate(events)]


def _logins(base: float, rnd: random.Random) -> list[dict[str, Any]]:
    ips = [f"198.51.100.{i}" for i in range(12)] + HOSTILE
    users = ["ann", "bob", "root", "admin"] + HOSTILE
    events: list[dict[str, Any]] = []

    def login(ts: float, ip: str, user: str, success: bool) -> None:
        events.append({"ts": ts, "ip": ip, "user": user, "success": success})

    # bursts of failures per IP: 4 to 30 within 15 to 150 s (from no alert to a few windows)
    for ip in ips:
        start, n, spread = (
            rnd.uniform(0, SPAN - 60),
            rnd.choice([4, 5, 6, 7, 9, 14, 30]),
            rnd.choice([15, 50, 150]),
        )
        for _ in range(n):
            login(_ts(rnd, base, start, spread), ip, rnd.choice(users), False)
    # takeovers: 1 to 6 failures of a user, then a success 2 to 320 s after the first
    for user in users:
        start, failures = rnd.uniform(0, SPAN - 100), rnd.choice([1, 2, 3, 4, 6])
        for _ in range(failures):
            login(_ts(rnd, base, start, 60), rnd.choice(ips), user, False)
        login(_ts(rnd, base, start + rnd.choice([2, 40, 250, 320]), 20), rnd.choice(ips), user, True)
    # background: mostly successes
    for _ in range(120):
        login(_ts(rnd, base, 0, SPAN), rnd.choice(ips), rnd.choice(users), rnd.random() < 0.8)
    return _distinct_times(events)


def _transactions(base: float, rnd: random.Random) -> list[dict[str, Any]]:
    cards = [f"4111-0000-0000-{i:04d}" for i in range(10)] + HOSTILE
    amounts = [0.0, 4.5, 9.75, 12.25, 20.0, 35.5, 49.0]  # binary fractions: sums exact in any order
    events: list[dict[str, Any]] = []

    def txn(ts: float, card: str, amount: float) -> None:
        txn_id = f"txn-{len(events)}" + rnd.choice(["", '-"quoted"', "-<b>", "-{value}", "-Ω"])
        events.append({"ts": ts, "txn_id": txn_id, "card_id": card, "amount": amount})

    for card in cards:
        # a history of usual amounts, sometimes a burst (card velocity) ...
        start, n, spread = rnd.uniform(0, SPAN - 150), rnd.choice([3, 5, 6, 8, 12]), rnd.choice([20, 55, 150])
        palette = rnd.choice([amounts, [0.0], [20.0, 35.5]])
        for _ in range(n):
            txn(_ts(rnd, base, start, spread), card, rnd.choice(palette))
        # ... then one far above it, or not (amount spike)
        txn(_ts(rnd, base, start + spread, 120), card, rnd.choice([10.0, 640.5, 5000.0]))
    for _ in range(80):
        txn(_ts(rnd, base, 0, SPAN), rnd.choice(cards), rnd.choice(amounts))
    return _distinct_times(events)


def _refused(base: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Logins and transactions the app's ingest refuses (dead letters), each key many times: a spec
    that counted them would alert on them (brute force, card velocity, amount spike)."""
    bad_ids = ["x" * 257, "nul\x00byte", "__faust-key", "esc\x1b[2J"]
    logins = [
        {"ts": base + 30 + i, "ip": ip, "user": "ann", "success": False} for ip in bad_ids for i in range(8)
    ]
    txns = [
        {"ts": base + 30 + i, "txn_id": f"bad-{n}-{i}", "card_id": card, "amount": 5.0}
        for n, card in enumerate(bad_ids)
        for i in range(8)
    ]
    # a card of good id whose amounts are out of range (at most STREAMAPP_MAX_AMOUNT, not negative)
    txns += [{"ts": base + 40 + i, "txn_id": f"big-{i}", "card_id": "4111-9999", "amount": a}
             for i, a in enumerate([1e300, -5.0] * 4)]  # fmt: skip
    return logins, txns


def _applied(workers: list[Worker], name: str) -> float:
    return sum(worker.metric("streamapp_detection_events_total", detection=name) for worker in workers)


def _produce_steps(
    bootstrap: str,
    names: Names,
    workers: list[Worker],
    logins: list[dict[str, Any]],
    txns: list[dict[str, Any]],
    seed: int,
) -> None:
    """Both topics in steps of STEP s of event time, each step shuffled, unkeyed over every
    partition; the next step once the workers applied every event sent (no event is ever more
    than the grace behind another one already applied: none is late, whatever the fetch order)."""

    def steps(events: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {}
        for event in events:
            out.setdefault(int((event["ts"] - first) // STEP), []).append(event)
        return out

    first = min(e["ts"] for e in logins + txns)
    login_steps, txn_steps = steps(logins), steps(txns)
    sent: dict[str, int] = dict.fromkeys(SPECS, 0)
    for n in sorted(set(login_steps) | set(txn_steps)):
        step_logins, step_txns = login_steps.get(n, []), txn_steps.get(n, [])

        async def produce(logins: list[dict[str, Any]], txns: list[dict[str, Any]]) -> None:
            await asyncio.gather(
                produce_spread(bootstrap, names.topic("logins"), logins, PARTITIONS),
                produce_spread(bootstrap, names.topic("transactions"), txns, PARTITIONS),
            )

        asyncio.run(produce(shuffled(step_logins, seed + n), shuffled(step_txns, seed - n)))
        sent["brute_force"] += sum(1 for e in step_logins if not e["success"])
        sent["account_takeover"] += len(step_logins)
        sent["card_velocity"] += len(step_txns)
        sent["amount_spike"] += len(step_txns)
        deadline = time.monotonic() + 30
        while any(_applied(workers, name) < sent[name] for name in SPECS):
            assert time.monotonic() < deadline, (
                f"step {n}: applied {[_applied(workers, name) for name in SPECS]} of {sent} "
                f"(late events: {_late_count(bootstrap, names)})"
            )
            time.sleep(0.2)


def _late_count(bootstrap: str, names: Names) -> int:
    return len(asyncio.run(read_all(bootstrap, names.topic("late-events"), settle=0)))


def _clock(txns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One transaction (no alert) each of cards that land on every partition of detection-events,
    more than the grace after every other event: each worker's amount_spike watermark passes the
    held transactions, which are judged (no quiet spell of the grace to wait for). The cards cover
    every partition whether detection-events is partitioned by the whole key (name NUL entity)
    or by the entity alone."""
    cards: list[str] = []
    for layout in (lambda card: f"amount_spike\x00{card}", lambda card: card):
        found: dict[int, str] = {}
        for i in range(1000):
            if len(found) == PARTITIONS:
                break
            found.setdefault(key_partition(layout(f"clock-{i}").encode(), PARTITIONS), f"clock-{i}")
        assert len(found) == PARTITIONS
        cards += [card for card in found.values() if card not in cards]
    ts = max(e["ts"] for e in txns) + GRACE + 5
    return [{"ts": ts, "txn_id": f"clock-{len(txns) + i}", "card_id": card, "amount": 1.0}
            for i, card in enumerate(cards)]  # fmt: skip


def _wait_running(workers: Iterable[Worker], names: Iterable[str]) -> None:
    wanted = dict.fromkeys(names, 1)

    def check(status: int, body: dict) -> bool:
        rows = {row["name"]: row["version"] for row in body.get("detections", [])}
        return status == 200 and rows == wanted

    for worker in workers:
        worker.wait_for("/detections", check, timeout=30)


def _check_stepped(
    name: str,
    got: list[dict[str, Any]],
    expected: list[dict[str, Any]],
    events: list[dict[str, Any]],
    key: str,
) -> None:
    """A stepped sliding count's alerts against the rule's in event-time order.

    The number of alerts per key does not depend on the arrival order, but which windows alert
    can: when a late event makes an earlier window the first to alert, the alert already raised
    for a later one stays (the rule's choice moves, no alert is taken back), and the alerts
    raised can then overlap. So per key: as many alerts as the rule gives; each of a 60-s window
    ending on the 10-s grid that holds more than the threshold of the key's events, its id the
    rule's id of that window, its value a count the window had (more than the threshold, at most
    what it holds).
    """
    per_key = Counter(a["key"] for a in expected)
    assert Counter(a["key"] for a in got) == per_key, name
    for entity in per_key:
        times = sorted(e["ts"] for e in events if e[key] == entity)
        mine = sorted((a for a in got if a["key"] == entity), key=lambda a: a["window_end"])
        for alert in mine:
            start, end = alert["window_start"], alert["window_end"]
            assert end - start == 60 and end % 10 == 0, alert
            held = sum(1 for ts in times if start <= ts < end)
            assert alert["threshold"] < alert["value"] <= held, (alert, held)
            assert alert["alert_id"] == alert_id_for(name, entity, start, end), alert


def check_alerts(
    got: list[dict[str, Any]],
    expected: dict[str, list[dict[str, Any]]],
    logins: list[dict[str, Any]],
    txns: list[dict[str, Any]],
) -> int:
    """``got`` (the alerts read back) against ``expected`` (the rules' in event-time order, per
    detection); the number of stepped-count alerts whose id is also the in-order one."""
    for name, same in SAME.items():
        mine = [tuple(a[f] for f in same) for a in got if a["kind"] == name]
        assert sorted(mine) == sorted(tuple(a[f] for f in same) for a in expected[name]), name
    assert all(3 <= a["value"] for a in got if a["kind"] == "account_takeover")
    failures = [e for e in logins if not e["success"]]
    _check_stepped("brute_force", [a for a in got if a["kind"] == "brute_force"],
                   expected["brute_force"], failures, "ip")  # fmt: skip
    _check_stepped("card_velocity", [a for a in got if a["kind"] == "card_velocity"],
                   expected["card_velocity"], txns, "card_id")  # fmt: skip
    assert len(got) == sum(map(len, expected.values()))
    in_order = {a["alert_id"] for name in ("brute_force", "card_velocity") for a in expected[name]}
    return sum(1 for a in got if a["alert_id"] in in_order)


def test_shipped_specs_in_two_workers_alert_as_the_rule_modules_once_each(
    kafka_bootstrap: str, names: Names, worker_factory: Callable[..., Worker]
) -> None:
    started = time.monotonic()
    env = {"STREAMAPP_RULES": RULES, "STREAMAPP_DETECTION_TOPICS": "logins,transactions"}
    workers = [worker_factory(ready=False, **env), worker_factory(ready=False, **env)]
    for worker in workers:
        worker.wait_ready()
    applied = workers[0].detections("apply", *(f"detections/{name}.yaml" for name in SPECS))
    assert applied.returncode == 0, applied.stderr
    _wait_running(workers, SPECS)
    ready = time.monotonic() - started

    seed = random.randrange(1_000_000)
    rnd = random.Random(seed)
    base = (time.time() - 3000) // 60 * 60 + rnd.randrange(60)  # any phase of the 10-s steps
    logins, txns = _logins(base, rnd), _transactions(base, rnd)
    clock = _clock(txns)
    expected = {
        **{name: [orjson.loads(a) for a in by_rule(name, sorted(logins, key=lambda e: e["ts"]))[0]]
           for name in LOGIN_SPECS},
        **{name: [orjson.loads(a) for a in by_rule(name, sorted(txns + clock, key=lambda e: e["ts"]))[0]]
           for name in CARD_SPECS},
    }  # fmt: skip
    counts = {name: len(alerts) for name, alerts in expected.items()}
    context = f"seed {seed}, base {base}, expected {counts}"
    # the data is not vacuous: every detection alerts, some on hostile keys, some keys twice
    assert all(counts[name] >= 2 for name in SPECS), context
    assert {a["key"] for alerts in expected.values() for a in alerts} & set(HOSTILE), context
    assert max(Counter(a["alert_id"] for alerts in expected.values() for a in alerts).values()) == 1

    producing = time.monotonic()
    bad_logins, bad_txns = _refused(base)

    async def produce_refused() -> None:
        await asyncio.gather(
            produce_spread(kafka_bootstrap, names.topic("logins"), bad_logins, PARTITIONS),
            produce_spread(kafka_bootstrap, names.topic("transactions"), bad_txns, PARTITIONS),
        )

    asyncio.run(produce_refused())
    _produce_steps(kafka_bootstrap, names, workers, logins, txns, seed)
    asyncio.run(produce_spread(kafka_bootstrap, names.topic("transactions"), clock, PARTITIONS))
    total = sum(counts.values())
    records = asyncio.run(
        read_until(kafka_bootstrap, names.topic("alerts"), lambda rs: len(rs) >= total, within=45)
    )
    alerted = time.monotonic() - producing
    # nothing more comes (a duplicate, an alert the rules do not give) once the clock is judged
    records = asyncio.run(read_all(kafka_bootstrap, names.topic("alerts"), settle=3))
    print(
        f"{context}: {len(logins)} logins, {len(txns) + len(clock)} transactions; workers ready and "
        f"specs running {ready:.1f} s, every alert {alerted:.1f} s after the first event was produced"
    )

    got = [orjson.loads(r.value) for r in records]
    assert all(r.key == orjson.loads(r.value)["key"].encode() for r in records)
    ids = Counter(a["alert_id"] for a in got)
    twice = [
        (r.partition, r.offset, r.timestamp, r.value)
        for r in records
        if ids[orjson.loads(r.value)["alert_id"]] > 1
    ]
    assert twice == [], f"alerted more than once ({context})"
    as_in_order = check_alerts(got, expected, logins, txns + clock)
    stepped = counts["brute_force"] + counts["card_velocity"]
    print(f"{as_in_order} of {stepped} stepped-count alerts name the windows chosen in event-time order")
    # what the app's ingest refuses is a dead letter once, with its reason, and no spec counted it
    # (alerts above: none about them); every other event was valid, and none late
    dead = asyncio.run(read_all(kafka_bootstrap, names.topic("dead-letters"), settle=0))
    assert sorted(orjson.loads(r.value)["ts"] for r in dead) == sorted(
        e["ts"] for e in bad_logins + bad_txns
    ), "each refused record once"
    assert all(dict(r.headers)["x-error"] for r in dead)
    assert _late_count(kafka_bootstrap, names) == 0
    for worker in workers:  # both workers took part
        assert worker.metric("streamapp_detection_events_total", detection="account_takeover") > 0
        assert all(worker.metric("streamapp_detection_invalid_events_total", detection=n) == 0 for n in SPECS)
    check_ip_views(workers, logins)


def check_ip_views(workers: list[Worker], logins: list[dict[str, Any]]) -> None:
    """/ips/{ip} answers from the brute_force spec's state: on either worker (the other's keys are
    relayed), the windows of the rule's state on the same events; an IP never seen: 404."""
    failures = sorted((e for e in logins if not e["success"]), key=lambda e: e["ts"])
    states = by_rule_run("brute_force", failures)[2]
    assert len(states) > len(workers)
    for ip, state in states.items():
        buckets = reversed(state["buckets"])
        expected = [{"start": start, "end": start + 10, "failed": n} for start, n in buckets]
        for worker in workers:
            status, body = worker.get(f"/ips/{quote(ip, safe='')}")
            assert status == 200, (ip, body)
            # the events are 40-50 minutes old: none in the last 60 s
            assert body == {"ip": ip, "failed_logins_60s": 0, "windows": expected}, ip
    assert "203.0.113.250" not in {e["ip"] for e in logins}
    for worker in workers:
        assert worker.get("/ips/203.0.113.250")[0] == 404
