"""Producer metadata that never forgets a topic the worker writes to."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from streamapp.runtime.faust_compat import tracked_topics

__all__ = ["keep_metadata_of"]


async def keep_metadata_of(client: Any, topics: Iterable[str], within: float = 10.0) -> None:
    """Make an aiokafka client track ``topics`` from now on, and wait (up to ``within`` s) for the refresh.

    A new aiokafka client tracks no topic, which means "fetch metadata for every topic". The
    first send to a topic missing from that metadata (one created after the client started)
    switches it to tracking that topic alone: the next refresh drops every other topic, and a
    batch already queued for one of them waits for a leader that never comes back (until the
    producer's 20-minute request timeout), holding up the transaction commit behind it. Once
    the client tracks topics and the refresh is in, a send to any other topic adds it first.
    """
    names = set(topics) | tracked_topics(client)
    if names:
        await asyncio.wait([client.set_topics(names)], timeout=within)
