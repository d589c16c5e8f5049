"""Dependencies the worker waits for (the schema registry): what waits, for /ready and a metric."""

from __future__ import annotations

from prometheus_client import Gauge

__all__ = ["DEPENDENCY_UP", "degraded", "dependency_down", "dependency_up"]

DEPENDENCY_UP = Gauge(
    "streamapp_dependency_up",
    "1 while a dependency answers, 0 while the worker waits for it (what waits: /ready's degraded)",
    ["dependency"],
)

_waiting: dict[str, str] = {}  # dependency -> what waits for it


def dependency_up(name: str) -> None:
    """``name`` answers: nothing waits for it."""
    _waiting.pop(name, None)
    DEPENDENCY_UP.labels(dependency=name).set(1)


def dependency_down(name: str, what_waits: str) -> None:
    """``name`` does not answer; ``what_waits`` (e.g. "users paused") waits for it."""
    _waiting[name] = what_waits
    DEPENDENCY_UP.labels(dependency=name).set(0)


def degraded() -> list[str]:
    """``"<dependency>: <what waits>"`` for every dependency that does not answer now."""
    return [f"{name.replace('_', '-')}: {what}" for name, what in sorted(_waiting.items())]
