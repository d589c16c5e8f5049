"""Alerting: what is published to `alerts` and counted in streamapp_alerts_total."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from streamapp.pipeline.alerting import Alerting
from streamapp.rules.base import rule_alert


def _counted(kind: str) -> float:
    return REGISTRY.get_sample_value("streamapp_alerts_total", {"kind": kind}) or 0.0


async def test_the_rules_filter_their_alerts_and_specs_publish_and_count_every_kind() -> None:
    sent: list[tuple[bytes, bytes]] = []

    async def send(key: bytes, value: bytes) -> Any:
        sent.append((key, value))
        return None

    rules = Alerting(frozenset({"brute_force"}), True, send)
    specs = Alerting(None, True, send)
    port_scan = rule_alert("port_scan_test", "10.0.0.9", 1.0, None, 21, 20, "21 ports", "x")
    before = _counted("port_scan_test")
    await rules.publish(port_scan)  # not a rule of STREAMAPP_RULES: neither sent nor counted
    assert sent == [] and _counted("port_scan_test") == before
    await specs.publish(port_scan)  # a detection spec's alert: sent once and counted
    assert sent == [(b"10.0.0.9", port_scan.to_json())]
    assert _counted("port_scan_test") == before + 1
