"""route_users: decode Avro `users` records by schema id (bad ones to dead-letters), re-key by name."""

from __future__ import annotations

import functools

import faust

from streamapp.app import app
from streamapp.models import User, parse_user
from streamapp.pipeline.ingest import route_batch
from streamapp.runtime.consumer import consume_in_batches
from streamapp.runtime.topics import users_by_name_topic, users_topic
from streamapp.schema.registry_service import decode_avro_value, schema_registry

__all__ = ["route_users"]


def _targets(user: User) -> list[tuple[faust.TopicT, str]]:
    return [(users_by_name_topic, user.name)]


@app.agent(users_topic, name="route-users")
async def route_users(stream: faust.StreamT[bytes]) -> None:
    handler = functools.partial(
        route_batch, parse=parse_user, source="users", rekey=_targets, decode=decode_avro_value
    )
    # behind the gate: a registry that is down pauses the users partitions only
    await consume_in_batches(stream, schema_registry.gate(handler))
