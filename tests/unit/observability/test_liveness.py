"""The liveness watchdog: stalled partitions named after STREAMAPP_STALL_SECONDS, with a fake clock."""

from __future__ import annotations

from faust.types import TP

from streamapp.observability.liveness import PartitionProgress, StallWatchdog

A, B = TP("logins", 0), TP("logins", 1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _watchdog(stall: float = 60.0) -> tuple[StallWatchdog, Clock]:
    clock = Clock()
    return StallWatchdog(stall, clock=clock), clock


def test_a_partition_with_lag_and_no_progress_is_stalled_after_the_stall_time() -> None:
    watchdog, clock = _watchdog()
    stuck = {A: PartitionProgress(done=10, highwater=50, read=9, position=20), B: PartitionProgress(5, 5)}
    for _ in range(11):  # a look every 5 s for 55 s: not yet
        assert watchdog.observe(stuck) == []
        clock.now += 5
    assert watchdog.live()
    clock.now += 5  # 60 s without progress
    (stall,) = watchdog.observe(stuck)
    assert (stall.tp, stall.lag, stall.seconds) == (A, 40, 60.0)
    assert not watchdog.live() and watchdog.stalled() == [stall]


def test_progress_of_the_committed_or_the_read_offset_restarts_the_timer() -> None:
    watchdog, clock = _watchdog()
    watchdog.observe({A: PartitionProgress(done=10, highwater=500, read=9, position=100)})
    clock.now += 50
    watchdog.observe({A: PartitionProgress(done=10, highwater=600, read=99, position=200)})  # read on
    clock.now += 50
    assert watchdog.observe({A: PartitionProgress(done=100, highwater=700, read=99, position=300)}) == []
    clock.now += 59
    assert watchdog.observe({A: PartitionProgress(done=100, highwater=800, read=99, position=300)}) == []
    clock.now += 1
    assert [s.tp for s in watchdog.observe({A: PartitionProgress(100, 800, 99, 300)})] == [A]
    clock.now += 5  # it moves again: live again
    assert watchdog.observe({A: PartitionProgress(done=150, highwater=800, read=149, position=300)}) == []
    assert watchdog.live()


def test_no_lag_is_never_a_stall_however_long_nothing_comes() -> None:
    watchdog, clock = _watchdog()
    for _ in range(100):
        assert watchdog.observe({A: PartitionProgress(done=42, highwater=42, read=41, position=42)}) == []
        clock.now += 5
    assert watchdog.live()


def test_transaction_markers_after_the_last_record_are_not_lag_that_waits() -> None:
    """Exactly-once: the committed offset stays one below the highwater (a commit marker)."""
    watchdog, clock = _watchdog()
    idle = PartitionProgress(done=41, highwater=42, read=40, position=42)
    assert idle.lag == 1 and not idle.waiting
    for _ in range(30):
        assert watchdog.observe({A: idle}) == []
        clock.now += 5
    # ... but records fetched and handed on without being done do wait
    handed = PartitionProgress(done=41, highwater=42, read=41, position=42)
    assert handed.waiting
    # and so do records not fetched yet
    assert PartitionProgress(done=41, highwater=60, read=40, position=42).waiting
    assert PartitionProgress(done=41, highwater=60, read=40, position=None).waiting


def test_not_ready_pauses_every_timer_and_lost_partitions_are_forgotten() -> None:
    watchdog, clock = _watchdog()
    stuck = PartitionProgress(done=10, highwater=50, read=9, position=20)
    watchdog.observe({A: stuck, B: stuck})
    clock.now += 50
    watchdog.pause()  # a rebalance: nothing is expected to progress
    clock.now += 50
    assert watchdog.observe({A: stuck, B: stuck}) == []  # the timers started again
    clock.now += 30
    watchdog.observe({A: stuck})  # B was revoked
    clock.now += 30
    assert [s.tp for s in watchdog.observe({A: stuck})] == [A]
    assert [s.tp for s in watchdog.stalled()] == [A]


def test_a_watchdog_that_stopped_looking_fails_liveness() -> None:
    watchdog, clock = _watchdog()
    clock.now += 3600
    assert watchdog.live(), "before the first look the worker is starting"
    watchdog.pause()
    clock.now += 59
    assert watchdog.live()
    clock.now += 1
    assert watchdog.silent_seconds() == 60.0 and not watchdog.live()
    watchdog.observe({})
    assert watchdog.live()


def test_the_worker_watchdog_names_stalled_partitions_in_the_metric_and_live(
    monkeypatch,
) -> None:
    from prometheus_client import REGISTRY

    from streamapp.observability import monitoring
    from streamapp.web import views as web

    clock = Clock()
    monkeypatch.setattr(web.watchdog, "_clock", clock)
    stuck = {A: PartitionProgress(done=10, highwater=50, read=9, position=20)}

    def stalled(tp: TP) -> float | None:
        labels = {"topic": tp.topic, "partition": str(tp.partition)}
        return REGISTRY.get_sample_value("streamapp_partition_stalled", labels)

    monitoring.check_liveness(stuck, ready=True)
    clock.now += web.watchdog.stall_seconds
    monitoring.check_liveness(stuck, ready=True)
    assert stalled(A) == 1.0

    live, body = web.watchdog.report()  # what GET /live answers (503 when not live)
    assert not live and body["status"] == "stalled"
    assert body["stalled"] == [{"topic": "logins", "partition": 0, "lag": 40, "seconds": 120.0}]
    monitoring.check_liveness(None, ready=False)  # consumer restarting: nothing is stalled
    assert stalled(A) is None
    assert web.watchdog.report() == (True, {"status": "live"})
