"""route_logins: validate `logins`; failed logins re-keyed by IP, every login re-keyed by user.

A rule left out of ``STREAMAPP_RULES`` gets nothing: without ``account_takeover`` no login takes
the by-user hop (half of the pipeline's Kafka records and state writes).
"""

from __future__ import annotations

from collections.abc import Iterator

import faust

from streamapp.app import app
from streamapp.models import Login, parse_login
from streamapp.pipeline.ingest import Ingest, ingest_for
from streamapp.runtime.consumer import drain_to_router
from streamapp.runtime.topics import failed_logins_by_ip_topic, logins_by_user_topic, logins_topic
from streamapp.settings import Settings
from streamapp.types import Rekey

__all__ = ["ingest", "login_targets", "route_logins"]


def login_targets(rules: frozenset[str]) -> Rekey:
    """Where a login goes for these rules (STREAMAPP_RULES): by IP if failed, by user."""
    by_ip = "brute_force" in rules
    by_user = "account_takeover" in rules
    if not by_ip and not by_user:  # (the logins go to the detection specs only, if any)
        return lambda login: ()

    def targets(login: Login) -> Iterator[tuple[faust.TopicT, str]]:
        if by_ip and not login.success:
            yield failed_logins_by_ip_topic, login.ip
        if by_user:
            yield logins_by_user_topic, login.user

    return targets


def ingest(app: faust.App, settings: Settings) -> Ingest:
    """The batch handler of `logins` (streamapp.app.declare_routes)."""
    rekey = login_targets(settings.hand_written_rules)
    return ingest_for(app, settings, source="logins", parse=parse_login, rekey=rekey)


@app.agent(logins_topic, name="route-logins")
async def route_logins(stream: faust.StreamT[bytes]) -> None:
    await drain_to_router(stream, route_logins.name)
