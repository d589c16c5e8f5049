"""detect_brute_force: count failed logins per IP and alert on bursts."""

from __future__ import annotations

from typing import Any

import faust

from agents.base import detect
from streamapp.app import app, settings
from streamapp.models import Alert
from streamapp.rules.base import State
from streamapp.rules.brute_force import BRUTE_FORCE
from streamapp.rules.sliding_count import new_state
from streamapp.runtime.clock import worker_clock
from streamapp.runtime.topics import failed_logins_by_ip_topic
from tables.failed_logins_by_ip import failed_logins_by_ip

__all__ = ["detect_brute_force"]


def _apply(state: State, ip: str, login: dict[str, Any]) -> tuple[bool, list[Alert]]:
    return BRUTE_FORCE.record(
        state,
        ip,
        login["ts"],
        settings.thresholds.brute_force_failures,
        worker_clock.horizon,
        keep=settings.retention_seconds,  # the /ips view lists the buckets of the retention
    )


@app.agent(failed_logins_by_ip_topic, name="detect-brute-force")
async def detect_brute_force(stream: faust.StreamT[bytes]) -> None:
    await detect(stream, failed_logins_by_ip, new_state, _apply, "logins")
