"""Alerting: what is published to `alerts` and counted in streamapp_alerts_total."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from streamapp.pipeline.alerting import Alerting
from streamapp.rules.base import rule_alert


def _counted(kind: str) -> float:
    return REGISTRY.get_sample_value("streamapp_alerts_total", {"kind": kind}) or 0.0


async def test_every_alert_is_published_once_and_counted_and_only_counted_without_publishing() -> None:
    sent: list[tuple[bytes, bytes]] = []

    async def send(key: bytes, value: bytes) -> Any:
        sent.append((key, value))
        return None

    port_scan = rule_alert("port_scan_test", "10.0.0.9", 1.0, None, 21, 20, "21 ports", "x")
    before = _counted("port_scan_test")
    await Alerting(False, send).publish(port_scan)  # STREAMAPP_PUBLISH_ALERTS=false: counted only
    assert sent == [] and _counted("port_scan_test") == before + 1
    await Alerting(True, send).publish(port_scan)  # a detection's alert of any kind: sent once, counted
    assert sent == [(b"10.0.0.9", port_scan.to_json())]
    assert _counted("port_scan_test") == before + 2
