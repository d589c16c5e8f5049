"""Producer metadata that never forgets a topic the worker writes to."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["keep_metadata_of"]


def keep_metadata_of(client: Any, topics: Iterable[str]) -> None:
    """Make an aiokafka client's metadata cover ``topics`` from now on, whatever is added later.

    A new aiokafka client tracks no topic, which means "fetch metadata for every topic". The
    first send to a topic missing from that metadata (one created after the client started)
    switches it to tracking that topic alone: the next refresh drops every other topic, and a
    batch already queued for one of them waits for a leader that never comes back (until the
    producer's 20-minute request timeout), holding up the transaction commit behind it.
    """
    names = set(topics)
    if names:
        client.set_topics(names | set(client._topics))
