"""detect_brute_force: count failed logins per IP and alert on bursts."""

from __future__ import annotations

import faust
import orjson

from streamapp.alerting import publish_alert
from streamapp.app import app, settings
from streamapp.clock import worker_clock
from streamapp.metrics import EXPIRED_EVENTS_TOTAL
from streamapp.rules.base import seen_before
from streamapp.rules.brute_force import new_state, record_failed_login
from streamapp.topics import failed_logins_by_ip_topic
from tables.failed_logins_by_ip import failed_logins_by_ip

__all__ = ["detect_brute_force"]


@app.agent(failed_logins_by_ip_topic, name="detect-brute-force")
async def detect_brute_force(stream: faust.StreamT[bytes]) -> None:
    threshold = settings.thresholds.brute_force_failures
    async for event in stream.events():
        key: bytes = event.key
        ts, src_partition, src_offset, ip = orjson.loads(event.value)[:4]
        worker_clock.observe(ts)
        state = failed_logins_by_ip.get(key) or new_state()
        if seen_before(state, src_partition, src_offset):
            continue
        counted, alert = record_failed_login(state, ip, ts, threshold, worker_clock.horizon)
        if not counted:
            EXPIRED_EVENTS_TOTAL.labels(topic="logins").inc()
            continue
        failed_logins_by_ip[key] = state
        if alert is not None:
            await publish_alert(alert)
