"""store_users: keep the latest `users` record of every name in the users-by-name table."""

from __future__ import annotations

import logging
import math
from typing import Any

import faust

from agents.record_checks import envelope_problem, key_problem, reset_state
from streamapp.app import app, settings
from streamapp.models import InvalidEvent, User, parse_user
from streamapp.pipeline.ingest import send_dead_letter
from streamapp.rules.base import seen_before
from streamapp.runtime.consumer import records_of_events
from streamapp.runtime.producer import RecordBatches
from streamapp.runtime.topics import dead_letters_topic, users_by_name_topic
from tables.users_by_name import users_by_name

__all__ = ["forwarded_user", "store_users", "take_if_newer"]

logger = logging.getLogger(__name__)


def take_if_newer(state: dict[str, Any], user: User) -> bool:
    """Make ``user`` the name's record unless the one held is newer (by record time); ties: last wins."""
    held = state.get("ts")
    if held is not None and user.ts < held:
        return False
    state.update(name=user.name, age=user.age, schema_id=user.schema_id, record=user.fields, ts=user.ts)
    return True


def forwarded_user(fields: dict[str, Any], record_ts: float | None) -> User:
    """Check a forwarded user (``e`` of a users-by-name record) as route_users' parser would.

    Only the app writes users-by-name: a record someone else wrote there must not store a user
    that the ingest would have refused (e.g. a time decades ahead, an age that is a string).
    """
    ts = fields.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts) or ts < 0:
        raise InvalidEvent("field 'ts' must be epoch seconds")
    user = parse_user({"schema_id": fields.get("schema_id"), "value": fields.get("fields")}, ts)
    if (user.name, user.age) != (fields.get("name"), fields.get("age")):
        raise InvalidEvent("fields 'name' and 'age' do not match the record")
    return user


def _stored(key: bytes) -> dict[str, Any]:
    """The name's stored state; a fresh one for a state that cannot be read (logged and counted)."""
    try:
        state = users_by_name.get(key)
    except Exception as exc:  # a changelog record someone else wrote: not JSON
        reset_state(users_by_name.name, key, f"it cannot be read ({type(exc).__name__})")
        return {}
    if state is None:
        return {}
    if not isinstance(state, dict):
        reset_state(users_by_name.name, key, "it is not a JSON object")
        return {}
    return state


@app.agent(users_by_name_topic, name="store-users")
async def store_users(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        record = records_of_events([event])[0]
        problem = key_problem(record.key)
        forwarded: Any = None
        if problem is not None:
            problem = f"record on an internal topic {problem}"
        else:
            forwarded, problem = envelope_problem(record, forwarded_user, settings.topic("users"))
        if problem is not None:  # a record the app did not write: a dead letter, the stream goes on
            batches = RecordBatches(app)
            await send_dead_letter(record, problem, batches, dead_letters_topic.get_topic_name())
            for delivery in await batches.send():
                await delivery.future
            continue
        key: bytes = record.key
        state = _stored(key)
        try:
            if seen_before(state, forwarded.partition, forwarded.offset):
                continue  # redelivered after a crash: already applied
        except Exception as exc:  # a stored state of the wrong shape (its 'src')
            reset_state(users_by_name.name, key, f"an event raised {type(exc).__name__} on it")
            state = {}
            seen_before(state, forwarded.partition, forwarded.offset)
        try:
            take_if_newer(state, forwarded.event)
        except Exception as exc:  # e.g. a stored 'ts' that is not a number
            reset_state(users_by_name.name, key, f"an event raised {type(exc).__name__} on it")
            state = {}
            seen_before(state, forwarded.partition, forwarded.offset)
            take_if_newer(state, forwarded.event)
        users_by_name[key] = state
