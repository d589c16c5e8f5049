"""A sample spec for the engine's unit tests: more than 2 failed logins of one IP in a sliding 60 s."""

from __future__ import annotations

from streamapp.detections.engine import Engine
from streamapp.detections.spec import load_text

__all__ = ["BURSTS", "bursts_engine"]

BURSTS = """
name: bursts
version: 1
severity: high
source: {topic: logins, fields: {ts: timestamp, ip: string, success: bool}}
key: ip
where: [{field: success, is: false}]
window: {type: sliding, size: 60}
aggregate: {fn: count}
condition: {type: threshold, op: ">", value: 2}
alert: {text: "{value:.0f} from {key}"}
grace: 5
"""


def bursts_engine() -> Engine:
    """A new engine of :data:`BURSTS`."""
    return Engine(load_text(BURSTS))
