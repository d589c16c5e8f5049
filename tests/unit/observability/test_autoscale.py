"""streamapp_recommended_workers: the worker count computed from fake group samples."""

from __future__ import annotations

import pytest

from streamapp.observability.autoscale import GroupSample, WorkerRecommender


def _run(rec: WorkerRecommender, samples: list[tuple[float, int, int, int]]) -> list[int]:
    return [rec.observe(GroupSample(at=at, end=end, done=done, members=m)) for at, end, done, m in samples]


def _steady(start: float, seconds: float, arrival: float, drain: float, lag0: int, members: int,
            end0: int = 0, step: float = 5.0) -> list[tuple[float, int, int, int]]:  # fmt: skip
    """Samples every ``step`` s: ``arrival`` records/s come in, ``drain`` records/s are processed."""
    out = []
    t = 0.0
    while t <= seconds:
        end = end0 + lag0 + int(arrival * t)
        done = end0 + int(drain * t)
        out.append((start + t, end, min(done, end), members))
        t += step
    return out


def test_no_backlog_recommends_one_worker():
    rec = WorkerRecommender(partitions=8)
    assert _run(rec, _steady(0, 60, arrival=100, drain=100, lag0=0, members=1))[-1] == 1


def test_backlog_with_one_saturated_worker_asks_for_enough_workers_to_drain_it_in_time():
    # one worker drains 1,000/s; 225,000-235,000 wait; nothing new arrives: to clear it in 60 s at 80 %
    # of the measured capacity needs ceil(3,750-3,917 / 800) = 5 workers
    rec = WorkerRecommender(partitions=8, drain_seconds=60)
    got = _run(rec, _steady(0, 10, arrival=0, drain=1000, lag0=235_000, members=1))
    assert rec.capacity == pytest.approx(1000, rel=0.01)
    assert got[-1] == 5


def test_arrivals_count_as_well_as_the_backlog():
    # 2,000/s arrive, one worker drains 1,000/s: a backlog grows; it needs ceil((2000 + lag/60)/800)
    rec = WorkerRecommender(partitions=16, drain_seconds=60)
    samples = _steady(0, 10, arrival=2000, drain=1000, lag0=60_000, members=1)
    got = _run(rec, samples)
    lag = samples[-1][1] - samples[-1][2]
    assert got[-1] == -(-(2000 + lag / 60) // 800)


def test_capped_at_the_partition_count():
    rec = WorkerRecommender(partitions=4, drain_seconds=10)
    assert _run(rec, _steady(0, 10, arrival=0, drain=100, lag0=1_000_000, members=1))[-1] == 4


def test_capacity_is_per_worker():
    # three workers draining 3,000/s together: 1,000/s each
    rec = WorkerRecommender(partitions=8, drain_seconds=60)
    _run(rec, _steady(0, 10, arrival=0, drain=3000, lag0=500_000, members=3))
    assert rec.capacity == pytest.approx(1000, rel=0.01)


def test_a_worker_that_keeps_up_teaches_no_capacity_and_holds_what_runs():
    # lag 0 at the end: not saturated, the drain rate is the arrival rate, not what a worker can do
    rec = WorkerRecommender(partitions=8)
    _run(rec, _steady(0, 30, arrival=500, drain=500, lag0=0, members=2))
    assert rec.capacity is None
    assert rec.recommended == 1


def test_rises_at_once_and_falls_only_after_the_scale_down_delay():
    rec = WorkerRecommender(partitions=8, drain_seconds=60, scale_down_seconds=30, window_seconds=10)
    backlog = _steady(0, 10, arrival=0, drain=1000, lag0=235_000, members=1)
    assert _run(rec, backlog)[-1] == 5
    # the backlog is gone at t=15: the need is 1 from then on, but the recommendation holds 30 s
    end = backlog[-1][1]
    drained = [(15.0 + 5 * i, end, end, 5) for i in range(10)]
    got = _run(rec, drained)
    times = [s[0] for s in drained]
    assert all(w == 5 for t, w in zip(times, got, strict=True) if t < 15 + 30)
    assert got[-1] == 1


def test_a_need_that_comes_back_within_the_delay_resets_it():
    rec = WorkerRecommender(partitions=8, drain_seconds=60, scale_down_seconds=30, window_seconds=10)
    _run(rec, _steady(0, 10, arrival=0, drain=1000, lag0=235_000, members=1))
    assert rec.recommended == 5
    # lower need for 20 s, then the backlog is back (a new burst): never lowered
    end = 235_000
    got = _run(rec, [(15.0, end, end - 10_000, 5), (20.0, end, end - 5_000, 5), (25.0, end, end, 5)])
    got += _run(rec, _steady(30, 10, arrival=0, drain=1000, lag0=235_000, members=1, end0=end))
    got += _run(rec, [(50.0, 2 * end, 2 * end, 1), (55.0, 2 * end, 2 * end, 1)])
    assert got[:3] == [5, 5, 5]  # the dip: held
    assert min(got) == 5  # the new burst (235,000 in 5 s) may raise it; nothing lowered it


def test_scale_down_goes_to_the_highest_need_seen_in_the_delay():
    rec = WorkerRecommender(partitions=8, drain_seconds=60, scale_down_seconds=10, window_seconds=5)
    rec.capacity, rec.recommended = 1000.0, 6
    # needs 3 then 2 over the delay (lag 120,000 then 48,000 at 800/s each after 60 s): ends at 3
    got = _run(rec, [(0.0, 500_000, 380_000, 6), (5.0, 500_000, 452_000, 6), (10.0, 500_000, 452_000, 6)])
    assert got == [6, 6, 3]


def test_partitions_must_be_positive():
    with pytest.raises(ValueError):
        WorkerRecommender(partitions=0)
