"""detect_account_takeover: a successful login right after a run of failures for that user."""

from __future__ import annotations

from typing import Any

import faust

from agents.base import detect
from streamapp.app import app, settings
from streamapp.models import Alert
from streamapp.rules.account_takeover import new_state, record_login
from streamapp.rules.base import State
from streamapp.runtime.clock import worker_clock
from streamapp.runtime.topics import logins_by_user_topic
from tables.logins_by_user import logins_by_user

__all__ = ["detect_account_takeover"]


def _apply(state: State, user: str, login: dict[str, Any]) -> tuple[bool, list[Alert]]:
    return record_login(
        state,
        user,
        login["ts"],
        login["success"],
        settings.thresholds.account_takeover_failures,
        worker_clock.horizon,
    )


@app.agent(logins_by_user_topic, name="detect-account-takeover")
async def detect_account_takeover(stream: faust.StreamT[bytes]) -> None:
    await detect(stream, logins_by_user, new_state, _apply, "logins")
