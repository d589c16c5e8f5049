"""The throughput contenders, one module each; every one reads the same pre-produced logins."""

from __future__ import annotations

from collections.abc import Callable

from bench.contenders.consumer_performance import consumer_performance
from bench.contenders.faust_idiomatic import faust_idiomatic
from bench.contenders.quix_streams import QUIX_FULL_NAME, QUIX_NAME, quix_full, quix_streams
from bench.contenders.raw_aiokafka import raw_aiokafka
from bench.contenders.streamapp_full import streamapp_full
from bench.contenders.streamapp_spec import SPEC_ENGINE_NAME, streamapp_spec
from bench.contenders.streamapp_spec_full import SPEC_FULL_NAME, streamapp_spec_full
from bench.contenders.streamapp_worker import (
    FULL_RULES,
    PEERS_RULES,
    STREAMAPP_FULL_NAME,
    STREAMAPP_NAME,
    streamapp_pipeline,
)
from bench.data import Dataset
from bench.harness import Bench, Outcome

__all__ = [
    "CONTENDERS",
    "FULL_RULES",
    "PEERS_RULES",
    "QUIX_FULL_NAME",
    "QUIX_NAME",
    "SPEC_ENGINE_NAME",
    "SPEC_FULL_NAME",
    "STREAMAPP_FULL_NAME",
    "STREAMAPP_NAME",
    "Contender",
    "consumer_performance",
    "faust_idiomatic",
    "quix_full",
    "quix_streams",
    "raw_aiokafka",
    "streamapp_full",
    "streamapp_pipeline",
    "streamapp_spec",
    "streamapp_spec_full",
]

#: measures one contender: (the run, the data, the topic prefix of the data) -> its figure
Contender = Callable[[Bench, Dataset, str], Outcome]

#: --only's names, in the order of the first round: label for the log, and the measurement
CONTENDERS: dict[str, tuple[str, Contender]] = {
    "kafka": ("Kafka ConsumerPerformance", lambda bench, data, _prefix: consumer_performance(bench, data)),
    "raw": ("raw aiokafka + orjson loop", lambda bench, data, _prefix: raw_aiokafka(bench, data)),
    "streamapp": ("streamapp worker", streamapp_pipeline),
    "streamapp-spec": ("streamapp worker, brute force as a detection spec", streamapp_spec),
    "streamapp-full": ("streamapp worker, both login rules", streamapp_full),
    "streamapp-spec-full": ("streamapp worker, both login detections as specs", streamapp_spec_full),
    "faust": ("idiomatic Faust worker", lambda bench, data, _prefix: faust_idiomatic(bench, data)),
    "quix": ("Quix Streams", lambda bench, data, _prefix: quix_streams(bench, data)),
    "quix-full": ("Quix Streams, both login detections", lambda bench, data, _prefix: quix_full(bench, data)),
}

#: the issue's speed targets (issue 17): (contender, ÷ contender, at least this ratio) in one round each
HEAD_TO_HEAD: list[tuple[str, str, float]] = [
    ("streamapp", "quix", 1.5),
    ("streamapp-spec", "quix", 1.5),
    ("streamapp-full", "quix-full", 1.5),
    ("streamapp-spec-full", "quix-full", 1.5),
]
