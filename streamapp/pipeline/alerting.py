"""Publishing alerts to the ``alerts`` topic, once per alert, keyed by the entity (or only counting them)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from streamapp.app import settings
from streamapp.models import Alert
from streamapp.observability.metrics import ALERTS_TOTAL
from streamapp.runtime.topics import alerts_topic

__all__ = ["publish_alert"]

logger = logging.getLogger(__name__)


async def publish_alert(alert: Alert) -> Awaitable[Any] | None:
    """Send the alert (key: entity id) and count it; return the delivery future.

    With ``STREAMAPP_PUBLISH_ALERTS=false`` (what `streamapp replay` runs with unless ``--alerts``)
    the alert is only counted and logged at debug level: a replay must not alert on old events again.
    An alert of a rule left out of ``STREAMAPP_RULES`` is neither published nor counted.
    """
    if alert.kind not in settings.rules:
        return None
    if not settings.publish_alerts:
        ALERTS_TOTAL.labels(kind=alert.kind).inc()
        logger.debug(
            "alert %s %s key=%s not published (STREAMAPP_PUBLISH_ALERTS=false)",
            alert.kind, alert.alert_id, alert.key,
        )  # fmt: skip
        return None
    delivery = await alerts_topic.send(key=alert.key.encode(), value=alert.to_json())
    ALERTS_TOTAL.labels(kind=alert.kind).inc()
    logger.info(
        "alert %s %s key=%s: %s", alert.kind, alert.alert_id, alert.key, alert.detail,
        extra={"kind": alert.kind, "key": alert.key, "alert_id": alert.alert_id},
    )  # fmt: skip
    return delivery
