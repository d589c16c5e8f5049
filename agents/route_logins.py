"""route_logins: validate `logins`, dead-letter bad records, re-key failed logins by IP."""

from __future__ import annotations

import faust
import orjson

from streamapp.app import app
from streamapp.ingest import decode_or_dead_letter
from streamapp.models import Login, parse_login
from streamapp.topics import failed_logins_by_ip_topic, logins_topic

__all__ = ["route_logins"]


@app.agent(logins_topic, name="route-logins")
async def route_logins(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        login: Login | None = await decode_or_dead_letter(event, parse_login, "logins")
        if login is None:
            continue
        message = event.message
        # the source position travels along so the detector can drop redeliveries
        payload = orjson.dumps(
            [login.ts, message.partition, message.offset, login.ip, login.user, login.success]
        )
        if not login.success:
            await failed_logins_by_ip_topic.send(key=login.ip.encode(), value=payload)
