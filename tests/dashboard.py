"""The Grafana dashboard's PromQL, and the metric names a query or a /metrics page mentions."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

__all__ = [
    "ALERT_RULES",
    "DASHBOARD",
    "alert_rule_queries",
    "alert_rules",
    "dashboard_queries",
    "exposed_metric_names",
    "metric_names",
]

GRAFANA = Path(__file__).resolve().parents[1] / "ops" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "streamapp.json"
ALERT_RULES = GRAFANA / "provisioning" / "alerting" / "streamapp.yml"

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan",
}  # fmt: skip
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def dashboard_queries(path: Path = DASHBOARD) -> list[str]:
    """Every PromQL ``expr`` of every panel (rows included) of the dashboard."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))

    def panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [p for item in items for p in (item, *panels(item.get("panels", [])))]

    return [t["expr"] for p in panels(dashboard["panels"]) for t in p.get("targets", []) if t.get("expr")]


def alert_rules(path: Path = ALERT_RULES) -> list[dict[str, Any]]:
    """Every rule of every group of Grafana's provisioned alert rules."""
    import yaml

    provisioned = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [rule for group in provisioned["groups"] for rule in group["rules"]]


def alert_rule_queries(path: Path = ALERT_RULES) -> list[str]:
    """The PromQL of every alert rule's query steps (expression steps left out)."""
    return [
        step["model"]["expr"]
        for rule in alert_rules(path)
        for step in rule["data"]
        if step.get("datasourceUid") != "__expr__"
    ]


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (not functions, keywords, labels or durations)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group()
        follows = text[match.end() :].lstrip()[:1]
        before = text[: match.start()]
        if follows == "(" or name.lower() in _KEYWORDS or re.search(r"[0-9.]$", before):
            continue  # a function call, a keyword, or part of a number such as 1e3
        names.add(name)
    return names


def exposed_metric_names(exposition: str) -> set[str]:
    """Series names a Prometheus text exposition offers, from its TYPE lines (also for families
    that have no sample yet): histograms as ``_bucket``/``_sum``/``_count``, counters with ``_total``."""
    names = set()
    for line in exposition.splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[:2] != ["#", "TYPE"]:
            continue
        name, kind = parts[2], parts[3]
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "summary":
            names |= {name, f"{name}_sum", f"{name}_count"}
        elif kind == "counter" and not name.endswith("_total"):
            names |= {name, f"{name}_total"}
        else:
            names.add(name)
    return names
