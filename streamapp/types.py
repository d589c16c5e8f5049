"""What passes between the pipeline's steps: fetched records, envelopes of typed events, handlers.

One stock price from fetch to state (docs/architecture.md):

- the batch consumer hands a fetch of a topic (``Sequence[ConsumerRecord]``) to the app's
  :class:`~streamapp.runtime.router.Router`, which calls that topic's :class:`BatchHandler`;
- the ingest handler (streamapp.pipeline.ingest) parses each record into a typed event
  (streamapp.models) and forwards it as an :class:`Envelope` to a by-entity topic, keyed by
  the entity (:data:`Rekey`), and hands it to the detections of its topic (:class:`DetectionHandoff`);
- the detector handler (agents.base) decodes the envelope again (streamapp.models.decode_envelope)
  and applies the typed event to the key's state (:data:`Apply`).

Every handler writes through a :class:`RecordSink` (streamapp.runtime.producer.RecordBatches on
a worker, a list in the unit tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeAlias, TypeVar

from aiokafka.structs import ConsumerRecord

if TYPE_CHECKING:
    import faust

    from streamapp.models import Login, SensorReading, StockPrice, Transaction, User
    from streamapp.runtime.producer import Delivery

__all__ = [
    "BatchHandler",
    "DetectionHandoff",
    "Envelope",
    "Event",
    "ForwardedRecord",
    "RecordSink",
    "Rekey",
    "StateStore",
]

#: an input event, as the ingest parsers (streamapp.models.parse_*) make it
Event: TypeAlias = "Login | SensorReading | Transaction | StockPrice | User"

E = TypeVar("E")


@dataclass(slots=True)
class Envelope(Generic[E]):
    """A typed event and where its input record was read (the forwarded value of a by-entity topic).

    The source position makes every update idempotent (streamapp.rules.base.seen_before); late
    events and dead letters name it. ``raw`` is the input value as text (JSON sources), which
    late-events keep byte for byte; None when absent (Avro, or too large to carry along).
    On the wire (streamapp.models.encode_envelope): ``{"src": [partition, offset], "e": event,
    "raw": text}``; the topic is not sent: a by-entity topic has one source topic.
    """

    topic: str
    partition: int
    offset: int
    event: E
    raw: str | None = None


@dataclass
class ForwardedRecord(ConsumerRecord):  # type: ignore[type-arg]
    """A by-entity record handed to its detector in process (it never went to its topic).

    It carries the envelope ingest built, so the detector neither decodes nor parses it again.
    """

    envelope: Envelope[Any] | None = None


class BatchHandler(Protocol):
    """Records of one topic (several partitions, each in offset order) -> the deliveries to wait for.

    The consumer acknowledges the records' offsets once every delivery is done (the records a
    handler produced are on the broker).
    """

    async def __call__(self, records: Sequence[ConsumerRecord], /) -> list[Delivery]: ...


class DetectionHandoff(Protocol):
    """Where the app's ingest hands its valid events for the detection specs of their topic
    (agents.run_detections): a spec on an app topic reads what the ingest accepted, once."""

    async def wanted(self, topic: str) -> bool:
        """Whether any running spec reads ``topic`` (a full topic name); waits for the control topic
        at the start."""
        ...

    async def __call__(self, events: Sequence[tuple[ConsumerRecord, Any]], /) -> list[Delivery]:
        """Each (record, the event the ingest parsed of it) to the specs of its topic; the deliveries
        to wait for."""
        ...


class RecordSink(Protocol):
    """Where a handler's output records go: batched per topic partition, sent at once (RecordBatches)."""

    async def prepare(self, *topics: str) -> None:
        """Learn the partition counts of ``topics`` (from the broker's metadata)."""

    def partitions_of(self, topic: str) -> int:
        """The topic's partition count (after :meth:`prepare`)."""
        ...

    def add(
        self, topic: str, key: bytes | None, value: bytes | None,
        partition: int | None = None, headers: list[tuple[str, bytes]] | None = None,
    ) -> None:  # fmt: skip
        """Queue one record (without ``partition``: the key's, murmur2 like Kafka's clients)."""

    async def send(self) -> list[Delivery]:
        """Hand every queued record to the producer; each delivery resolves once the broker has it."""
        ...


class StateStore(Protocol):
    """A detector's per-key states (tables.base.TableStore: a faust table's RocksDB and changelog)."""

    @property
    def name(self) -> str: ...

    def load(self, partition: int, key: bytes) -> bytes | None:
        """The stored state of ``key`` as written (JSON), or None."""

    def store(self, states: Iterable[tuple[int, bytes, Any]], sink: RecordSink) -> None:
        """Write each (partition, key, state) now; their changelog records go out with ``sink``'s records."""

    def store_clock(self, partition: int, sink: RecordSink) -> None:
        """Write the worker's event clock for ``partition`` (now, and its changelog with ``sink``)."""

    def remember(self, deliveries: list[Delivery]) -> None:
        """Once delivered, keep the changelog offsets of ``deliveries`` (where a restart reads on)."""


#: a parsed event -> the by-entity topics it goes to, each with the entity key
Rekey: TypeAlias = "Callable[[Any], Iterable[tuple[faust.TopicT, str]]]"
