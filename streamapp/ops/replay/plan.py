"""What `streamapp replay` replays: the start time, the new app id, its topics, the options."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import faust

from streamapp.settings import PREFIX, Settings

__all__ = [
    "Echo",
    "ReplayError",
    "ReplayOptions",
    "ReplayTopics",
    "app_topics",
    "check_new_app_id",
    "parse_start_time",
]

Echo = Callable[[str], None]

_EPOCH_SECONDS = re.compile(r"^\d+(\.\d+)?$")


class ReplayError(RuntimeError):
    """The replay cannot start or go on; the message (one line) says why and what to do."""


def parse_start_time(text: str) -> float:
    """Epoch seconds from ``--from``: epoch seconds, or ISO-8601 with an offset (``Z`` allowed)."""
    raw = text.strip()
    if _EPOCH_SECONDS.match(raw):
        return float(raw)
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ReplayError(
            f"--from {text!r} is neither epoch seconds nor ISO-8601 (e.g. 2026-01-01T12:00:00+00:00)"
        ) from None
    if parsed.tzinfo is None:
        raise ReplayError(f"--from {text!r} has no UTC offset: add one, e.g. {raw}+00:00 or {raw}Z")
    return parsed.timestamp()


def check_new_app_id(new_id: str, settings: Settings) -> None:
    """Refuse the live app id: a replay never writes into the state it is meant to replace."""
    if new_id == settings.app_id:
        raise ReplayError(
            f"--app-id {new_id} is the live app id (STREAMAPP_APP_ID): a replay builds fresh state "
            f"under a new app id, e.g. --app-id {settings.app_id}-r1"
        )


@dataclass(frozen=True)
class ReplayTopics:
    """The topics of the app under the new app id."""

    #: input topics the app's agents read (shared by every app id)
    source: tuple[str, ...]
    #: by-entity topics of the new app id, written and read by its agents
    internal: tuple[str, ...]
    #: every topic that belongs to the new app id: internal, changelogs, faust's assignor topic
    owned: tuple[str, ...]


def app_topics(new_id: str) -> ReplayTopics:
    """The app's topics under ``new_id``, from the agents and tables the app modules declare.

    The app is imported in this process (it is never run here) under a placeholder app id that
    no topic prefix can clash with: the topic names that start with it are the app's own, the
    others are source topics. So this must run before anything else here imports
    :mod:`streamapp.app`. A new agent or table is picked up without changing this module.
    """
    placeholder = f"streamapp-replay-{uuid.uuid4().hex}"
    os.environ[f"{PREFIX}APP_ID"] = placeholder
    # in the function: both imports build the app (streamapp.app) from the environment set just above
    from streamapp.app import app, import_app_modules, settings
    from streamapp.runtime import topics as app_topic_module

    if settings.app_id != placeholder:
        raise ReplayError(f"the app was already imported here with app id {settings.app_id}")
    import_app_modules()
    names: set[str] = set()
    for agent in app.agents.values():
        names.update(getattr(agent.channel, "topics", ()))
    ours = f"{placeholder}-"
    # topics the app writes under its id but no agent reads (the sinks read <app id>-sensor-windows)
    outputs = sorted(
        name
        for topic in vars(app_topic_module).values()
        if isinstance(topic, faust.TopicT)
        for name in topic.topics
        if name.startswith(ours) and name not in names
    )

    def renamed(name: str) -> str:
        return f"{new_id}-{name.removeprefix(ours)}"

    internal = sorted(renamed(n) for n in names if n.startswith(ours))
    source = sorted(n for n in names if not n.startswith(ours))
    changelogs = sorted(renamed(t.changelog_topic.get_topic_name()) for t in app.tables.values())
    owned = [*internal, *(renamed(n) for n in outputs), *changelogs, f"{new_id}-__assignor-__leader"]
    clash = sorted(set(owned) & set(source))
    if clash:
        raise ReplayError(f"--app-id {new_id} would name its own topics like source topics ({clash[0]})")
    return ReplayTopics(source=tuple(source), internal=tuple(internal), owned=tuple(owned))


# -- the run ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplayOptions:
    """What `streamapp replay` was asked to do."""

    app_id: str
    data_dir: Path
    web_port: int
    start_time: float | None = None
    publish_alerts: bool = False
    serve: bool = False
    force: bool = False
    interval: float = 1.5
    #: STREAMAPP_TOPIC_PREFIX of the worker (replay --from-archive: the staging copies)
    topic_prefix: str | None = None
