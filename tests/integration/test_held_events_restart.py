"""Events held by amount_spike are judged after a restart within the grace (the sweep finds them)."""

from __future__ import annotations

import time

import orjson
import pytest

from tests.integration.kafka_io import produce_spread, read_until, shuffled

pytestmark = pytest.mark.integration

PARTITIONS = 4


async def test_held_amount_spike_survives_a_restart(kafka_bootstrap, names, worker_factory):
    # six transactions in 15 s: card_velocity is raised out of the way, only amount_spike is held
    worker = worker_factory(
        STREAMAPP_GRACE_SECONDS="20", STREAMAPP_PARTITIONS=str(PARTITIONS),
        STREAMAPP_CARD_VELOCITY_THRESHOLD="10",
    )  # fmt: skip
    base = (time.time() - 600) // 60 * 60
    txns = [{"ts": base + 3 * i, "txn_id": f"s{i}", "card_id": "c", "amount": 10.0} for i in range(5)]
    txns.append({"ts": base + 15, "txn_id": "big", "card_id": "c", "amount": 500.0})
    # without keys over every partition, in an order shuffled within the grace (the events span
    # 15 s): the big one is held until the card has been quiet for 20 s
    await produce_spread(kafka_bootstrap, names.topic("transactions"), shuffled(txns, seed=15), PARTITIONS)
    worker.wait_for("/cards/c", lambda s, b: s == 200 and b["count"] == 6)
    worker.stop()  # a clean stop (or kill -9, or a rebalance) within the grace
    worker.start()
    worker.wait_ready()
    # the live run without the restart alerts about 20 s after the last transaction
    records = await read_until(kafka_bootstrap, names.topic("alerts"), lambda r: len(r) >= 1, within=90)
    assert [(orjson.loads(r.value)["kind"], r.key) for r in records] == [("amount_spike", b"c")]
