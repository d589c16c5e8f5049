"""store_users: keep the latest `users` record of every name in the users-by-name table."""

from __future__ import annotations

from typing import Any

import faust
import orjson

from streamapp.app import app
from streamapp.rules.base import seen_before
from streamapp.topics import users_by_name_topic
from tables.users_by_name import users_by_name

__all__ = ["store_users", "take_if_newer"]


def take_if_newer(state: dict[str, Any], user: dict[str, Any]) -> bool:
    """Make ``user`` the name's record unless the one held is newer (by record time); ties: last wins."""
    held = state.get("ts")
    if held is not None and user["ts"] < held:
        return False
    state.update(
        name=user["name"], age=user["age"], schema_id=user["schema_id"], record=user["fields"], ts=user["ts"]
    )
    return True


@app.agent(users_by_name_topic, name="store-users")
async def store_users(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        key: bytes = event.key
        forwarded = orjson.loads(event.value)
        state: dict[str, Any] = users_by_name.get(key) or {}
        if seen_before(state, *forwarded["src"]):
            continue  # redelivered after a crash: already applied
        take_if_newer(state, forwarded["e"])
        users_by_name[key] = state
