"""route_users: decode Avro `users` records by schema id (bad ones to dead-letters), re-key by name."""

from __future__ import annotations

import faust

from streamapp.app import app
from streamapp.models import User, parse_user
from streamapp.pipeline.ingest import ingest_for
from streamapp.runtime.consumer import drain_to_router
from streamapp.runtime.topics import users_by_name_topic, users_topic
from streamapp.schema.registry_service import decode_avro_value, schema_registry
from streamapp.settings import Settings
from streamapp.types import BatchHandler

__all__ = ["ingest", "route_users"]


def _targets(user: User) -> list[tuple[faust.TopicT, str]]:
    return [(users_by_name_topic, user.name)]


def ingest(app: faust.App, settings: Settings) -> BatchHandler:
    """The batch handler of `users` (streamapp.app.declare_routes), behind the registry's gate: a
    registry that is down pauses the users partitions only."""
    handler = ingest_for(
        app, settings, source="users", parse=parse_user, rekey=_targets, decode=decode_avro_value
    )
    return schema_registry.gate(handler)


@app.agent(users_topic, name="route-users")
async def route_users(stream: faust.StreamT[bytes]) -> None:
    await drain_to_router(stream, route_users.name)
