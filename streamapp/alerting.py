"""Publishing alerts to the ``alerts`` topic, once per alert, keyed by the entity."""

from __future__ import annotations

import logging

from streamapp.metrics import ALERTS_TOTAL
from streamapp.models import Alert
from streamapp.topics import alerts_topic

__all__ = ["publish_alert"]

logger = logging.getLogger(__name__)


async def publish_alert(alert: Alert) -> None:
    """Send the alert (key: entity id) and count it."""
    await alerts_topic.send(key=alert.key.encode(), value=alert.to_json())
    ALERTS_TOTAL.labels(kind=alert.kind).inc()
    logger.info(
        "alert %s %s key=%s: %s", alert.kind, alert.alert_id, alert.key, alert.detail,
        extra={"kind": alert.kind, "key": alert.key, "alert_id": alert.alert_id},
    )  # fmt: skip
