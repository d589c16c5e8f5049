"""route_logins: validate `logins`; failed logins re-keyed by IP, every login re-keyed by user."""

from __future__ import annotations

from collections.abc import Iterable

import faust

from streamapp.app import app
from streamapp.ingest import route
from streamapp.models import Login, parse_login
from streamapp.topics import failed_logins_by_ip_topic, logins_by_user_topic, logins_topic

__all__ = ["route_logins"]


def _targets(login: Login) -> Iterable[tuple[faust.TopicT, str]]:
    if not login.success:
        yield failed_logins_by_ip_topic, login.ip
    yield logins_by_user_topic, login.user


@app.agent(logins_topic, name="route-logins")
async def route_logins(stream: faust.StreamT[bytes]) -> None:
    await route(stream, parse_login, "logins", _targets)
