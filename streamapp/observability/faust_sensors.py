"""What faust's sensors count per record, counted per batch for the records streamapp batches itself."""

from __future__ import annotations

from typing import Any

from faust.types import TP, AppT

from streamapp.runtime.faust_compat import prometheus_metrics

__all__ = ["count_received", "count_sent"]


def count_received(app: AppT, tp: TP, records: int, last_offset: int) -> None:
    """Records of ``tp`` handed to a batch handler (faust's ``on_message_in``, ``records`` times)."""
    monitor: Any = app.monitor
    monitor.messages_received_total += records
    monitor.messages_received_by_topic[tp.topic] += records
    monitor.tp_read_offsets[tp] = last_offset
    metrics = prometheus_metrics(monitor)  # faust's PrometheusMonitor
    if metrics is not None:
        metrics.messages_received_per_topics.labels(topic=tp.topic).inc(records)
        metrics.messages_received_per_topics_partition.labels(topic=tp.topic, partition=tp.partition).set(
            last_offset
        )


def count_sent(app: AppT, topic: str, records: int) -> None:
    """Records handed to the producer in one batch (faust's ``on_send_initiated``, ``records`` times)."""
    monitor: Any = app.monitor
    monitor.messages_sent += records
    monitor.messages_sent_by_topic[topic] += records
    metrics = prometheus_metrics(monitor)
    if metrics is not None:
        metrics.topic_messages_sent.labels(topic=f"topic.{topic}").inc(records)
        metrics.total_sent_messages.inc(records)
