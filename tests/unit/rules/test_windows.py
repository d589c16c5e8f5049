"""Event-time bucket helpers and the worker's event clock."""

from __future__ import annotations

import pytest

from streamapp.rules.windows import (
    SWEEP_INTERVAL_SECONDS,
    SWEEP_WORK_SHARE,
    EventClock,
    add_to_bucket,
    bucket_start,
    buckets_total,
    drop_buckets_before,
    next_sweep_in,
)


@pytest.mark.parametrize(
    ("ts", "size", "start"),
    [
        (1000.0, 10.0, 1000.0),
        (1009.999, 10.0, 1000.0),
        (1010.0, 10.0, 1010.0),
        (119.5, 60.0, 60.0),
        (120, 60.0, 120.0),
        (-0.5, 10.0, -10.0),
    ],
)
def test_bucket_start_is_aligned_to_epoch(ts, size, start):
    assert bucket_start(ts, size) == start
    assert isinstance(bucket_start(ts, size), float)


def test_add_to_bucket_in_order():
    buckets: list[list[float]] = []
    for start in (0.0, 0.0, 10.0, 20.0, 20.0, 20.0):
        add_to_bucket(buckets, start)
    assert buckets == [[0.0, 2], [10.0, 1], [20.0, 3]]


def test_add_to_bucket_keeps_order_with_out_of_order_inserts():
    buckets: list[list[float]] = []
    for start in (50.0, 10.0, 30.0, 10.0, 0.0, 60.0, 30.0, 40.0, 50.0):
        add_to_bucket(buckets, start)
    assert buckets == [[0.0, 1], [10.0, 2], [30.0, 2], [40.0, 1], [50.0, 2], [60.0, 1]]


def test_add_to_bucket_amount():
    buckets = [[10.0, 1]]
    add_to_bucket(buckets, 10.0, amount=2.5)
    add_to_bucket(buckets, 0.0, amount=4)
    assert buckets == [[0.0, 4], [10.0, 3.5]]


def test_buckets_total_is_half_open():
    buckets = [[0.0, 1], [10.0, 2], [20.0, 4], [30.0, 8]]
    assert buckets_total(buckets, 10.0, 30.0) == 6
    assert buckets_total(buckets, 0.0, 40.0) == 15
    assert buckets_total(buckets, 5.0, 10.0) == 0
    assert buckets_total([], 0.0, 100.0) == 0


def test_drop_buckets_before():
    buckets = [[0.0, 1], [10.0, 2], [20.0, 4], [30.0, 8]]
    drop_buckets_before(buckets, 19.9, 10.0)  # [0, 10) ended; [10, 20) not yet
    assert buckets == [[10.0, 2], [20.0, 4], [30.0, 8]]
    drop_buckets_before(buckets, 20.0, 10.0)  # ending exactly at the horizon is expired
    assert buckets == [[20.0, 4], [30.0, 8]]
    drop_buckets_before(buckets, 0.0, 10.0)
    assert buckets == [[20.0, 4], [30.0, 8]]
    drop_buckets_before(buckets, 1000.0, 10.0)
    assert buckets == []
    drop_buckets_before(buckets, 1000.0, 10.0)
    assert buckets == []


def test_event_clock_horizon_is_zero_before_any_event():
    clock = EventClock(retention_seconds=3600)
    assert clock.newest == 0.0
    assert clock.horizon == 0.0


def test_event_clock_follows_the_newest_event_time():
    clock = EventClock(retention_seconds=3600)
    clock.observe(10_000.0)
    assert clock.horizon == 10_000.0 - 3600
    clock.observe(9_000.0)  # an older event does not move the clock back
    assert clock.newest == 10_000.0
    assert clock.horizon == 10_000.0 - 3600
    clock.observe(20_000.5)
    assert clock.horizon == 20_000.5 - 3600


def test_sweeps_of_little_work_run_every_interval():
    assert next_sweep_in(started=100.0, busy=0.001, now=100.5) == SWEEP_INTERVAL_SECONDS - 0.5
    assert next_sweep_in(started=100.0, busy=0.001, now=107.0) == 0.0  # a paced sweep ran long


def test_sweeps_of_much_work_are_spaced_to_a_percent_of_the_time():
    # 0.2 s of work (100,000 keys) -> the next sweep 20 s after this one started
    wait = next_sweep_in(started=100.0, busy=0.2, now=102.0)
    assert wait == pytest.approx(18.0)
    assert 0.2 / (102.0 - 100.0 + wait) == pytest.approx(SWEEP_WORK_SHARE)
