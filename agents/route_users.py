"""route_users: decode Avro `users` records by schema id (bad ones to dead-letters), re-key by name."""

from __future__ import annotations

import faust

from streamapp.app import app
from streamapp.ingest import route
from streamapp.models import User, parse_user
from streamapp.registry_service import decode_avro_value
from streamapp.topics import users_by_name_topic, users_topic

__all__ = ["route_users"]


def _targets(user: User) -> list[tuple[faust.TopicT, str]]:
    return [(users_by_name_topic, user.name)]


@app.agent(users_topic, name="route-users")
async def route_users(stream: faust.StreamT[bytes]) -> None:
    await route(stream, parse_user, "users", _targets, decode=decode_avro_value)
