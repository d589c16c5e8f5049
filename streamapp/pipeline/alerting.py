"""Publishing alerts to the ``alerts`` topic, once per alert, keyed by the entity (or only counting them)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from streamapp.models import Alert
from streamapp.observability.metrics import ALERTS_TOTAL

__all__ = ["Alerting"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alerting:
    """Where the detections' alerts go: the send to the alerts topic, or only the count.

    On a worker ``send`` is the alerts topic's (streamapp.runtime.topics.alerts_topic.send);
    the detector waits for the delivery it returns before writing the states that remember it.
    """

    #: STREAMAPP_PUBLISH_ALERTS (false for `streamapp replay` unless ``--alerts``)
    publish_alerts: bool
    #: (key, value) -> the delivery future
    send: Callable[..., Awaitable[Awaitable[Any]]]

    async def publish(self, alert: Alert) -> Awaitable[Any] | None:
        """Send the alert (key: entity id) and count it; return the delivery future.

        With ``publish_alerts`` false the alert is only counted and logged at debug level: a
        replay must not alert on old events again.
        """
        if not self.publish_alerts:
            ALERTS_TOTAL.labels(kind=alert.kind).inc()
            logger.debug(
                "alert %s %s key=%s not published (STREAMAPP_PUBLISH_ALERTS=false)",
                alert.kind, alert.alert_id, alert.key,
            )  # fmt: skip
            return None
        delivery = await self.send(key=alert.key.encode(), value=alert.to_json())
        ALERTS_TOTAL.labels(kind=alert.kind).inc()
        logger.info(
            "alert %s %s key=%s: %s", alert.kind, alert.alert_id, alert.key, alert.detail,
            extra={"kind": alert.kind, "key": alert.key, "alert_id": alert.alert_id},
        )  # fmt: skip
        return delivery
