"""route_logins: validate `logins`; failed logins re-keyed by IP, every login re-keyed by user.

A rule left out of ``STREAMAPP_RULES`` gets nothing: without ``account_takeover`` no login takes
the by-user hop (half of the pipeline's Kafka records and state writes).
"""

from __future__ import annotations

from collections.abc import Iterable

import faust

from streamapp.app import app, settings
from streamapp.models import Login, parse_login
from streamapp.pipeline.ingest import route
from streamapp.runtime.topics import failed_logins_by_ip_topic, logins_by_user_topic, logins_topic

__all__ = ["route_logins"]


_BY_IP = "brute_force" in settings.rules
_BY_USER = "account_takeover" in settings.rules


def _targets(login: Login) -> Iterable[tuple[faust.TopicT, str]]:
    if _BY_IP and not login.success:
        yield failed_logins_by_ip_topic, login.ip
    if _BY_USER:
        yield logins_by_user_topic, login.user


@app.agent(logins_topic, name="route-logins")
async def route_logins(stream: faust.StreamT[bytes]) -> None:
    await route(stream, parse_login, "logins", _targets)
