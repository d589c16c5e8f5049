"""After the replay: how readers move from the live app id to the replayed one."""

from __future__ import annotations

from streamapp.ops.replay.plan import ReplayTopics
from streamapp.settings import Settings
from streamapp.sinks.influx import InfluxWriter
from streamapp.sinks.postgres import PostgresWriter

__all__ = ["old_topics_pattern", "sink_groups", "switch_over_hint"]


def old_topics_pattern(live_id: str, new_id: str, topics: ReplayTopics) -> str:
    """A regular expression (Kafka's tools take one) matching exactly the live app id's own topics.

    Never the new app id's, nor source topics, even when one app id is a prefix of the other.
    """
    suffixes = [name.removeprefix(f"{new_id}-") for name in topics.owned]
    return f"{_literal(live_id)}-({'|'.join(_literal(s) for s in suffixes)})"


def _literal(text: str) -> str:
    """``text`` as a regular expression that matches only itself (Java and Python alike)."""
    return "".join(c if c.isalnum() or c in "_-" else f"\\{c}" for c in text)


def sink_groups(app_id: str) -> list[str]:
    """The consumer groups of the app id's sinks (streamapp.sinks: ``<app id>-sink-<name>``)."""
    return [f"{app_id}-sink-{writer.name}" for writer in (PostgresWriter, InfluxWriter)]


def switch_over_hint(settings: Settings, new_id: str, topics: ReplayTopics) -> str:
    """How to move readers from the live app id to the replayed one, step by step."""
    live_id = settings.app_id
    bootstrap = ",".join(settings.bootstrap_servers)
    return "\n".join(
        [
            "to switch over:",
            f"  1. run workers with STREAMAPP_APP_ID={new_id} beside the {live_id} workers: they recover "
            "the rebuilt state from its changelog topics, then follow new records",
            "  2. once their streamapp_consumer_lag is about 0, point readers and dashboards at them",
            f"  3. stop the {live_id} workers",
            f"  4. delete what {live_id} leaves behind:",
            f"     kafka-topics.sh --bootstrap-server {bootstrap} --delete --topic "
            f"'{old_topics_pattern(live_id, new_id, topics)}'",
            f"     kafka-consumer-groups.sh --bootstrap-server {bootstrap} --delete --group {live_id}"
            + "".join(f" --group {group}" for group in sink_groups(live_id)),
            "     (the -sink- groups exist only where its PostgreSQL or InfluxDB sink ran)",
        ]
    )
