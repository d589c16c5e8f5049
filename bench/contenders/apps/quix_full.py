"""Quix Streams, the whole login pipeline: failed logins per IP and account takeover per user (``group_by``).

Run as its own process: ``python -m bench.contenders.apps.quix_full`` with ``BENCH_BROKER`` (host:port list),
``BENCH_GROUP``, ``BENCH_TOPIC``, ``BENCH_DATA_DIR``, ``BENCH_EXPECT`` (the logins) and ``BENCH_PROGRESS``.
Two branches of one dataframe, as Quix's docs write them:

- by IP (the records are keyed by IP already): ``filter(not success).hopping_window(60 s, 10 s).count()
  .current()``, as apps/quix_count.py;
- by user: ``group_by("user")`` (a real repartition topic: every login produced and fetched again),
  then a stateful ``apply`` keeping each user's recent failures and successes in Quix's RocksDB
  state with its changelog: a successful login after at least 3 failed logins within 5 minutes is an
  account takeover, judged on event time as streamapp's rule is (streamapp/rules/account_takeover.py):
  a failure that arrives after a success it precedes still completes the run, one alert per success.

A login counts as done once both branches have handled it (:class:`PairedProgress`).
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_left, bisect_right, insort
from typing import TYPE_CHECKING, Any

from bench.progress import ProgressFile

if TYPE_CHECKING:  # the logic is unit-tested without the bench extra; the app needs it
    from quixstreams import Application, State

__all__ = ["LOOKBACK_SECONDS", "THRESHOLD", "PairedProgress", "build", "main", "takeover"]

logger = logging.getLogger("bench.quix_full")

#: streamapp's account_takeover: at least 3 failed logins (ACCOUNT_TAKEOVER_THRESHOLD) within 5 minutes
THRESHOLD = 3
LOOKBACK_SECONDS = 300.0
#: how far behind a user's newest login an event may arrive and still count (streamapp's grace)
GRACE_SECONDS = 60.0
# only the newest events can decide: caps bound the state of a user under attack (as streamapp's rule)
MAX_FAILURES = 256
MAX_SUCCESSES = 64


def event_time_ms(value: Any, headers: Any, timestamp: int, timestamp_type: Any) -> int:
    """Event time from the record's ``ts`` (epoch seconds) in milliseconds."""
    return int(value["ts"] * 1000)


def takeover(login: dict[str, Any], state: State) -> list[dict[str, Any]]:
    """One login of the user whose state this is: the account-takeover alerts it completes.

    State: ``f`` the failure times (sorted), ``s`` the successes as [time, alerted] (sorted),
    ``last`` the newest login time. A success alerts when at least THRESHOLD failures fall in the
    5 minutes before it, whether they arrived before or after it.
    """
    ts = float(login["ts"])
    failures: list[float] = state.get("f") or []
    successes: list[list[float]] = state.get("s") or []
    last = max(float(state.get("last") or ts), ts)
    alerts: list[dict[str, Any]] = []
    if login["success"]:
        failed = _failures_before(failures, ts)
        alerted = failed >= THRESHOLD
        insort(successes, [ts, 1 if alerted else 0])
        if alerted:
            alerts.append(_alert(login["user"], ts, failed))
    else:
        insort(failures, ts)
        # a late failure may complete the run before successes already seen
        for entry in successes[bisect_left(successes, [ts, 2]) :]:
            if entry[0] > ts + LOOKBACK_SECONDS:
                break
            if not entry[1]:
                failed = _failures_before(failures, entry[0])
                if failed >= THRESHOLD:
                    entry[1] = 1
                    alerts.append(_alert(login["user"], entry[0], failed))
    horizon = last - LOOKBACK_SECONDS - GRACE_SECONDS
    del failures[: max(bisect_right(failures, horizon), len(failures) - MAX_FAILURES)]
    del successes[: max(bisect_left(successes, [last - GRACE_SECONDS, 2]), len(successes) - MAX_SUCCESSES)]
    state.set("f", failures)
    state.set("s", successes)
    state.set("last", last)
    return alerts


def _failures_before(failures: list[float], ts: float) -> int:
    return bisect_left(failures, ts) - bisect_left(failures, ts - LOOKBACK_SECONDS)


def _alert(user: str, ts: float, failed: int) -> dict[str, Any]:
    return {"kind": "account_takeover", "key": user, "ts": ts, "value": failed, "threshold": THRESHOLD}


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
