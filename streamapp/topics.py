"""Every Kafka topic the app reads or writes, declared with its partition count."""

from __future__ import annotations

import faust

from streamapp.app import app, settings

__all__ = [
    "SOURCE_TOPICS",
    "alerts_topic",
    "dead_letters_topic",
    "failed_logins_by_ip_topic",
    "logins_by_user_topic",
    "logins_topic",
]


def _external(name: str) -> faust.TopicT:
    # raw bytes in and out: decoding happens in the agent so bad records reach dead-letters intact
    return app.topic(
        settings.topic(name),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
        internal=True,  # "internal" makes faust create the topic with this partition count
    )


def _by_entity(name: str) -> faust.TopicT:
    # Re-keyed by entity with raw key bytes: the same bytes, partitioner and partition count as
    # the tables' changelogs, so web routing (table_route) finds the worker that owns a key.
    return app.topic(
        f"{settings.topic_prefix}{settings.app_id}-{name}",
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
        internal=True,
    )


logins_topic = _external("logins")
alerts_topic = _external("alerts")
dead_letters_topic = _external("dead-letters")

failed_logins_by_ip_topic = _by_entity("failed-logins-by-ip")
logins_by_user_topic = _by_entity("logins-by-user")

SOURCE_TOPICS = {"logins": logins_topic}
