"""observe_many gives a histogram the same buckets, count and sum as one observe() per value."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from streamapp.observability.metrics import observe_many


def _samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for metric in histogram.collect()
        for sample in metric.samples
    }


def test_observe_many_equals_observe_per_value() -> None:
    buckets = (0.01, 0.05, 0.1, 0.25, 1, 10)
    one_by_one = Histogram("lag_a", "lag", buckets=buckets, registry=CollectorRegistry())
    batched = Histogram("lag_a", "lag", buckets=buckets, registry=CollectorRegistry())
    # values on bucket bounds (le is inclusive), between them, beyond the last, and zero
    values = [0.0, 0.01, 0.011, 0.05, 0.07, 0.1, 0.25, 0.3, 1.0, 9.99, 10.0, 11.0, 3600.0]
    for value in values:
        one_by_one.observe(value)
    observe_many(batched, values)
    assert _samples(batched) == _samples(one_by_one)
    assert _samples(batched)[("lag_a_count", "")] == len(values)
    assert _samples(batched)[("lag_a_bucket", "0.05")] == 4  # 0.0, 0.01, 0.011, 0.05


def test_observe_many_of_nothing_changes_nothing() -> None:
    histogram = Histogram("lag_b", "lag", registry=CollectorRegistry())
    observe_many(histogram, [])
    assert _samples(histogram)[("lag_b_count", "")] == 0
    assert _samples(histogram)[("lag_b_sum", "")] == 0
