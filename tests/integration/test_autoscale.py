"""streamapp_recommended_workers on a real backlog: it rises, the workers it asks for drain the
backlog, and it comes back to 1."""

from __future__ import annotations

import time

import pytest

from tests.integration.kafka_io import produce

pytestmark = pytest.mark.integration

BACKLOG = 80_000


async def test_backlog_raises_the_recommendation_and_draining_it_brings_it_back_to_one(
    kafka_bootstrap, names, worker_factory
):
    base = time.time() - 120
    # 100 IPs, 800 failed logins each: a backlog for the routing and the detection stages
    logins = [
        {"ts": base + (i // 100) * 0.01, "ip": f"198.18.{i % 100}.1", "user": "u", "success": False}
        for i in range(BACKLOG)
    ]
    await produce(kafka_bootstrap, names.topic("logins"), logins)
    settings = {
        "STREAMAPP_PARTITIONS": "2",  # the recommendation is capped at 2: two workers are "N"
        "STREAMAPP_AUTOSCALE_DRAIN_SECONDS": "3",
        "STREAMAPP_AUTOSCALE_SCALE_DOWN_SECONDS": "10",
        "STREAMAPP_RULES": "brute_force",
        # smaller fetches: a slower drain keeps the backlog long enough to be measured on a busy machine
        "STREAMAPP_MAX_POLL_RECORDS": "100",
    }
    first = worker_factory(**settings)
    started = time.monotonic()
    raised = first.wait_for_metric("streamapp_recommended_workers", lambda v: v > 1, timeout=90)
    rose_after = time.monotonic() - started
    assert raised == 2  # capped at the partition count
    second = worker_factory(**settings)
    # every failed login counted once per IP: the backlog is drained
    for worker, ip in ((first, "198.18.0.1"), (second, "198.18.99.1")):
        body = worker.wait_for(
            f"/ips/{ip}",
            lambda s, b: s == 200 and sum(w["failed"] for w in b["windows"]) >= 800,
            timeout=180,
        )
        assert sum(w["failed"] for w in body["windows"]) == 800
    back = first.wait_for_metric("streamapp_recommended_workers", lambda v: v == 1, timeout=120)
    assert back == 1
    assert second.wait_for_metric("streamapp_recommended_workers", lambda v: v == 1, timeout=60) == 1
    print(f"\nautoscale: recommendation rose to {raised:g} {rose_after:.1f} s after the first worker started")
