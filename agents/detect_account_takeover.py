"""detect_account_takeover: a successful login right after a run of failures for that user."""

from __future__ import annotations

import faust

from agents.base import Detector, detect
from agents.worker_detector import detector_for
from streamapp.app import app
from streamapp.models import Alert, Login
from streamapp.rules.account_takeover import new_state, record_login
from streamapp.rules.base import State
from streamapp.runtime.clock import worker_clock
from streamapp.runtime.topics import logins_by_user_topic
from streamapp.settings import Settings
from tables.logins_by_user import logins_by_user

__all__ = ["detect_account_takeover", "detector"]


def detector(app: faust.App, settings: Settings) -> Detector:
    """The batch handler of logins-by-user (streamapp.app.declare_routes)."""
    failures = settings.thresholds.account_takeover_failures

    def apply(state: State, user: str, login: Login) -> tuple[bool, list[Alert]]:
        return record_login(state, user, login.ts, login.success, failures, worker_clock.horizon)

    return detector_for(
        app, settings, source="logins", table=logins_by_user, new_state=new_state, apply=apply
    )


@app.agent(logins_by_user_topic, name="detect-account-takeover")
async def detect_account_takeover(stream: faust.StreamT[bytes]) -> None:
    await detect(stream, detect_account_takeover.name)
