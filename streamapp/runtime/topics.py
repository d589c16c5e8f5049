"""Every Kafka topic the app reads or writes, declared with its partition count."""

from __future__ import annotations

import faust

from streamapp.app import app, settings

__all__ = [
    "SOURCE_TOPICS",
    "declare_output_topics",
    "alerts_topic",
    "dead_letters_topic",
    "late_events_topic",
    "logins_topic",
    "prices_by_symbol_topic",
    "sensor_readings_topic",
    "sensor_windows_topic",
    "stock_prices_topic",
    "transactions_topic",
    "users_by_name_topic",
    "users_topic",
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
        f"{settings.app_id}-{name}",  # internal: scoped by app id, like faust's changelogs
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
        internal=True,
    )


logins_topic = _external("logins")
sensor_readings_topic = _external("sensor-readings")
transactions_topic = _external("transactions")
stock_prices_topic = _external("stock-prices")
users_topic = _external("users")  # Avro, Confluent wire format
alerts_topic = _external("alerts")
dead_letters_topic = _external("dead-letters")
#: valid events that came later than the grace allows (see streamapp.rules.base.lateness)
late_events_topic = _external("late-events")

prices_by_symbol_topic = _by_entity("prices-by-symbol")
users_by_name_topic = _by_entity("users-by-name")
#: every update of a sensor's 60-s window (key: sensor id), read by the PostgreSQL and InfluxDB sinks
sensor_windows_topic = _by_entity("sensor-windows")

#: contract name -> topic, for every JSON input topic
SOURCE_TOPICS = {
    "logins": logins_topic,
    "sensor-readings": sensor_readings_topic,
    "transactions": transactions_topic,
    "stock-prices": stock_prices_topic,
}


@app.task
async def declare_output_topics() -> None:
    """Create the output topics at start: faust creates only the topics agents subscribe to."""
    for topic in (alerts_topic, dead_letters_topic, late_events_topic, sensor_windows_topic):
        await topic.maybe_declare()
