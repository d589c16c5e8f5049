"""Where a worker keeps an entity's state: the detection-state changelog and the keys to read there."""

from __future__ import annotations

from collections.abc import Mapping

from streamapp.detections.operators import IP_DETECTIONS, SENSOR_DETECTIONS
from streamapp.settings import load_settings

__all__ = ["ip_changelog", "sensor_changelog", "tombstoned"]


def sensor_changelog(env: Mapping[str, str], sensor: str) -> tuple[str, list[bytes]]:
    """The changelog topic holding ``sensor``'s state on a worker of ``env`` and its keys there.

    The shipped specs the worker runs (STREAMAPP_RULES as it reads it) keep a state per sensor
    detection in ``detection-state`` (key ``name NUL sensor``): as many keys as detections a
    reading is late for.
    """
    settings = load_settings(env)
    specs = [name for name in SENSOR_DETECTIONS if name in settings.rules]
    assert specs, "the worker runs no temperature detection: no sensor has a state"
    return f"{settings.app_id}-detection-state-changelog", [f"{n}\x00{sensor}".encode() for n in specs]


def ip_changelog(env: Mapping[str, str], ip: str) -> tuple[str, bytes]:
    """The changelog topic holding ``ip``'s failed-login count on a worker of ``env``, and its key:
    the brute force spec's state in ``detection-state``."""
    settings = load_settings(env)
    specs = [name for name in IP_DETECTIONS if name in settings.rules]
    assert specs, "the worker runs no brute force detection: no IP has a state"
    return f"{settings.app_id}-detection-state-changelog", f"{specs[0]}\x00{ip}".encode()


def tombstoned(records: list, keys: list[bytes]) -> bool:
    """Whether the last record of every key in ``records`` (a changelog's, in order) is a tombstone."""
    last = {r.key: r.value for r in records if r.key in keys}
    return last.keys() == set(keys) and all(value is None for value in last.values())
