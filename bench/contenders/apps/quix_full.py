"""Quix Streams, the whole login pipeline: failed logins per IP and account takeover per user (``group_by``).

Run as its own process: ``python -m bench.contenders.apps.quix_full`` with ``BENCH_BROKER`` (host:port list),
``BENCH_GROUP``, ``BENCH_TOPIC``, ``BENCH_DATA_DIR``, ``BENCH_EXPECT`` (the logins) and ``BENCH_PROGRESS``.
Two branches of one dataframe, as Quix's docs write them:

- by IP (the records are keyed by IP already): ``filter(not success).hopping_window(60 s, 10 s).count()
  .current()``, as apps/quix_count.py;
- by user: ``group_by("user")`` (a real repartition topic: every login produced and fetched again),
  then a stateful ``apply`` keeping each user's recent failures and successes in Quix's RocksDB
  state with its changelog: a successful login after at least 3 failed logins within 5 minutes is an
  account takeover, judged on event time by streamapp's own rule function
  (streamapp/rules/account_takeover.py): a failure that arrives after a success it precedes still
  completes the run, one alert per success.

A login counts as done once both branches have handled it (:class:`PairedProgress`).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from bench.progress import ProgressFile
from streamapp.rules.account_takeover import LOOKBACK_SECONDS, new_state, record_login

if TYPE_CHECKING:  # the logic is unit-tested without the bench extra; the app needs it
    from quixstreams import Application, State

__all__ = ["THRESHOLD", "PairedProgress", "build", "main", "takeover"]

logger = logging.getLogger("bench.quix_full")

#: streamapp's account_takeover: at least 3 failed logins (ACCOUNT_TAKEOVER_THRESHOLD) within 5 minutes
THRESHOLD = 3
#: how far behind a user's newest login an event may arrive and still count (streamapp's grace)
GRACE_SECONDS = 60.0


def event_time_ms(value: Any, headers: Any, timestamp: int, timestamp_type: Any) -> int:
    """Event time from the record's ``ts`` (epoch seconds) in milliseconds."""
    return int(value["ts"] * 1000)


def takeover(login: dict[str, Any], state: State) -> list[dict[str, Any]]:
    """One login of the user whose state this is: the account-takeover alerts it completes.

    The rule is streamapp's own (streamapp.rules.account_takeover.record_login, a pure function of
    a JSON state): both sides pay the same rule; what differs is the framework around it. Each
    user's state lives in Quix's state store under one key. streamapp's lateness model too: a login
    more than the grace behind the user's newest does not count (streamapp sends it to
    late-events), and failures older than the lookback and the grace are dropped.
    """
    ts = float(login["ts"])
    rule_state = state.get("takeover") or new_state()
    if rule_state["last"] and ts < rule_state["last"] - GRACE_SECONDS:
        return []
    horizon = max(rule_state["last"], ts) - LOOKBACK_SECONDS - GRACE_SECONDS
    _counted, alerts = record_login(rule_state, login["user"], ts, login["success"], THRESHOLD, horizon)
    state.set("takeover", rule_state)
    return [
        {"kind": a.kind, "key": a.key, "ts": a.ts, "value": a.value, "threshold": a.threshold} for a in alerts
    ]


class PairedProgress:
    """A login is done once it was handled on the source topic and again after the repartition.

    The clock starts at the first login handled; ``progress`` ticks as the smaller of the two
    counts grows, so it reaches ``expect`` when both branches have handled every login.
    """

    def __init__(self, progress: ProgressFile, source: str) -> None:
        self.progress = progress
        self.source = source
        self.logins = 0
        self.regrouped = 0

    def processed(self, topic: str, _partition: int, _offset: int) -> None:
        before = min(self.logins, self.regrouped)
        if topic == self.source:
            if self.logins == 0:
                self.progress.start()
            self.logins += 1
        else:
            self.regrouped += 1
        if min(self.logins, self.regrouped) > before:
            self.progress.tick()


def build() -> tuple[Application, Any]:
    """The application and its dataframe: both branches registered on the source topic's dataframe."""
    from quixstreams import Application

    source = os.environ["BENCH_TOPIC"]
    progress = ProgressFile(os.environ["BENCH_PROGRESS"], int(os.environ["BENCH_EXPECT"]))
    paired = PairedProgress(progress, source)
    app = Application(
        broker_address=os.environ.get("BENCH_BROKER", "127.0.0.1:9092"),
        consumer_group=os.environ["BENCH_GROUP"],
        auto_offset_reset="earliest",
        state_dir=os.environ["BENCH_DATA_DIR"],
        on_message_processed=paired.processed,
        loglevel="INFO",
    )
    topic = app.topic(
        source, key_deserializer="str", value_deserializer="json", timestamp_extractor=event_time_ms
    )
    sdf = app.dataframe(topic)
    # branch 1, by IP: the same count as apps/quix_count.py
    failed = sdf.filter(lambda login: not login["success"])
    failed.hopping_window(duration_ms=60_000, step_ms=10_000).count().current()
    # branch 2, by user: re-keyed through a repartition topic, then the per-user state
    by_user = sdf.group_by("user")
    alerts = by_user.apply(takeover, stateful=True).filter(bool)
    alerts.update(lambda found: logger.info("alert %s", found))
    return app, sdf


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app, _sdf = build()
    app.run()  # every branch of every dataframe registered with the app


if __name__ == "__main__":
    main()
