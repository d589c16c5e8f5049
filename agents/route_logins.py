"""route_logins: validate `logins`; the valid logins go to the detections of `logins`."""

from __future__ import annotations

import faust

from streamapp.app import app
from streamapp.models import parse_login
from streamapp.pipeline.ingest import Ingest, ingest_for, to_specs_only
from streamapp.runtime.consumer import drain_to_router
from streamapp.runtime.topics import logins_topic
from streamapp.settings import Settings

__all__ = ["ingest", "route_logins"]


def ingest(app: faust.App, settings: Settings) -> Ingest:
    """The batch handler of `logins` (streamapp.app.declare_routes)."""
    return ingest_for(app, settings, source="logins", parse=parse_login, rekey=to_specs_only)


@app.agent(logins_topic, name="route-logins")
async def route_logins(stream: faust.StreamT[bytes]) -> None:
    await drain_to_router(stream, route_logins.name)
