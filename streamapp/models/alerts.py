"""The value of a record on the ``alerts`` topic, and its deterministic id."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import orjson

__all__ = ["Alert", "alert_id_for"]


@dataclass(slots=True, frozen=True)
class Alert:
    """The value of a record on the ``alerts`` topic."""

    alert_id: str
    kind: str
    key: str
    ts: float
    window_start: float | None
    window_end: float | None
    value: float
    threshold: float
    detail: str

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes) -> Alert:
        return cls(**orjson.loads(data))


def alert_id_for(kind: str, key: str, *parts: object) -> str:
    """A deterministic id: the same rule firing on the same input always gives the same id."""
    text = "|".join([kind, key, *(repr(p) for p in parts)])
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:20]
