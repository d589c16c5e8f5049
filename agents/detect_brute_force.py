"""detect_brute_force: count failed logins per IP and alert on bursts."""

from __future__ import annotations

import faust

from agents.base import Detector, detect
from agents.worker_detector import detector_for
from streamapp.app import app
from streamapp.models import Alert, Login
from streamapp.rules.base import State
from streamapp.rules.brute_force import BRUTE_FORCE
from streamapp.rules.sliding_count import new_state
from streamapp.runtime.clock import worker_clock
from streamapp.runtime.topics import failed_logins_by_ip_topic
from streamapp.settings import Settings
from tables.failed_logins_by_ip import failed_logins_by_ip

__all__ = ["detect_brute_force", "detector"]


def detector(app: faust.App, settings: Settings) -> Detector:
    """The batch handler of failed-logins-by-ip (streamapp.app.declare_routes)."""
    failures, keep = settings.thresholds.brute_force_failures, settings.retention_seconds

    def apply(state: State, ip: str, login: Login) -> tuple[bool, list[Alert]]:
        # keep: the /ips view lists the buckets of the retention
        return BRUTE_FORCE.record(state, ip, login.ts, failures, worker_clock.horizon, keep=keep)

    return detector_for(
        app, settings, source="logins", table=failed_logins_by_ip, new_state=new_state, apply=apply
    )


@app.agent(failed_logins_by_ip_topic, name="detect-brute-force")
async def detect_brute_force(stream: faust.StreamT[bytes]) -> None:
    await detect(stream, detect_brute_force.name)
