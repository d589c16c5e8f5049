"""The worker's schema registry client and writer-schema cache: a service started and stopped with the app."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aiohttp
from aiokafka.structs import ConsumerRecord
from faust.types import TP
from mode import Service

from streamapp.app import app, settings
from streamapp.dev.registry import DEFAULT_REGISTRY_URL
from streamapp.models import InvalidEvent
from streamapp.runtime.consumer import BatchHandler, NotProcessed, abandon_before_waiting
from streamapp.runtime.dependencies import dependency_down, dependency_up
from streamapp.runtime.producer import Delivery
from streamapp.schema.avro import HEADER_BYTES, MAGIC_BYTE, AvroDecoder, RegisteredSchema
from streamapp.schema.registry_client import (
    SchemaRegistryClient,
    SchemaRegistryError,
    SchemaRegistryUnavailable,
)

__all__ = [
    "DEFAULT_REGISTRY_URL",
    "DEPENDENCY",
    "RegistryGate",
    "SchemaRegistryService",
    "decode_avro_value",
    "schema_registry",
]

logger = logging.getLogger(__name__)

_MAX_BACKOFF = 10.0
#: the name of the registry in streamapp_dependency_up and /ready's degraded list
DEPENDENCY = "schema_registry"
T = TypeVar("T")


class SchemaRegistryService(Service):
    """Owns the HTTP session to the registry (opened on start, closed on stop) and the decoder.

    A registry that cannot be reached is waited for, with backoff, and never turns good records
    into dead letters: only an answer ("no such schema id", "not under the topic's subject")
    does. Only ids registered under ``<users topic>-value`` are decoded.
    """

    def __init__(self, url: str | None = None, subject: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.url = url or settings.schema_registry_url or DEFAULT_REGISTRY_URL
        self.subject = subject or f"{settings.topic('users')}-value"
        self._session: aiohttp.ClientSession | None = None
        self._client: SchemaRegistryClient | None = None
        self.decoder = AvroDecoder(self._fetch, subjects_of=self._subjects_of, subject=self.subject)
        self._ready = asyncio.Event()
        self.gates: list[RegistryGate] = []

    async def on_start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._client = SchemaRegistryClient(self.url, session=self._session)
        self._ready.set()
        dependency_up(DEPENDENCY)  # until a request says otherwise
        logger.info("schema registry client for %s started", self.url)

    async def on_stop(self) -> None:
        self._ready.clear()
        for gate in self.gates:
            await gate.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def until_ready(self) -> AvroDecoder:
        """The decoder, once the service runs (the app starts services after table recovery)."""
        await self._ready.wait()
        return self.decoder

    def gate(self, handler: BatchHandler) -> RegistryGate:
        """``handler`` behind a :class:`RegistryGate` of this registry."""
        gate = RegistryGate(self, handler)
        self.gates.append(gate)
        return gate

    async def _fetch(self, schema_id: int) -> RegisteredSchema | None:
        return await self._retrying(lambda client: client.schema_by_id(schema_id), f"schema id {schema_id}")

    async def _subjects_of(self, schema_id: int) -> frozenset[str]:
        return await self._retrying(
            lambda client: client.subjects_of(schema_id), f"the subjects of schema id {schema_id}"
        )

    async def _retrying(self, call: Callable[[SchemaRegistryClient], Awaitable[T]], what: str) -> T:
        backoff = 0.5
        while True:
            client = self._client
            assert client is not None, "SchemaRegistryService used before it started"
            try:
                answer = await call(client)
            except SchemaRegistryUnavailable as exc:
                logger.warning("%s; users paused, retrying in %.1f s", exc, backoff)
            except SchemaRegistryError as exc:
                # not an answer about the id (wrong URL, no permission, ...): a problem to fix, not a
                # reason to dead-letter good records
                logger.warning(
                    "schema registry at %s cannot tell %s: %s (check STREAMAPP_SCHEMA_REGISTRY_URL); "
                    "users paused, retrying in %.1f s", self.url, what, exc, backoff,
                )  # fmt: skip
            else:
                dependency_up(DEPENDENCY)
                return answer
            dependency_down(DEPENDENCY, "users paused")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)


class RegistryGate:
    """A batch handler for the users topic that never holds up the fetch path of other topics.

    A batch whose schema ids the decoder's caches answer goes straight to ``handler``. A batch
    that needs the registry (a new id, the subject's list due again) is handed to a task of its
    own, and the partitions it came from are paused: faust's fetcher goes on with every other
    topic, and the users records wait in Kafka, not in memory. The task waits for the registry
    (with backoff, ``streamapp_dependency_up{dependency="schema_registry"}`` 0 and /ready's
    ``degraded`` naming what waits meanwhile), then hands the batches to ``handler`` in the order
    they came, and resumes the partitions. The batch's offsets are acknowledged only once its
    records are delivered (the placeholder delivery), so nothing is lost or skipped.
    """

    def __init__(self, service: SchemaRegistryService, handler: BatchHandler) -> None:
        self.service = service
        self.handler = handler
        self._backlog: deque[tuple[list[ConsumerRecord], asyncio.Future[Any]]] = deque()
        self._paused: set[TP] = set()
        self._task: asyncio.Task[None] | None = None
        abandon_before_waiting(self.abandon)

    @property
    def waiting(self) -> int:
        """Batches waiting for the registry."""
        return len(self._backlog)

    def _needs_registry(self, records: Sequence[ConsumerRecord]) -> bool:
        if not self.service.ready:
            return True
        needs = self.service.decoder.needs_registry
        return any(needs(record.value) for record in records)

    async def __call__(self, records: Sequence[ConsumerRecord]) -> list[Delivery]:
        if not records:
            return []
        if not self._backlog and not self._needs_registry(records):
            return await self.handler(records)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._backlog.append((list(records), future))
        self._pause({TP(record.topic, record.partition) for record in records})
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return [Delivery(TP(records[0].topic, records[0].partition), 0, future)]

    def _pause(self, tps: set[TP]) -> None:
        fresh = tps - self._paused
        if fresh:
            app.consumer.pause_partitions(fresh)
            self._paused |= fresh

    def _resume(self) -> None:
        if self._paused:
            paused, self._paused = self._paused, set()
            try:
                owned = app.consumer.assignment()
                app.consumer.resume_partitions({tp for tp in paused if tp in owned})
            except Exception:  # the consumer is stopping: nothing to resume
                logger.debug("resuming %s failed", paused, exc_info=True)

    async def _drain(self) -> None:
        try:
            while self._backlog:
                records, future = self._backlog[0]
                try:
                    await self._prepare(records)
                    # a rebalance meanwhile moved partitions to another worker, which reads them again
                    owned = app.consumer.assignment()
                    mine = [record for record in records if TP(record.topic, record.partition) in owned]
                    deliveries = await self.handler(mine) if mine else []
                    if deliveries:
                        await asyncio.gather(*(delivery.future for delivery in deliveries))
                except Exception as exc:  # what the handler would have raised on the fetch path
                    if not future.done():
                        future.set_exception(exc)
                else:
                    if not future.done():
                        future.set_result(None)
                self._backlog.popleft()
        finally:
            self._resume()

    async def _prepare(self, records: list[ConsumerRecord]) -> None:
        """Wait until the decoder holds (or has refused) every schema id of the batch."""
        decoder = await self.service.until_ready()
        ids = sorted(
            {
                int.from_bytes(record.value[1:HEADER_BYTES], "big")
                for record in records
                if record.value is not None
                and len(record.value) >= HEADER_BYTES
                and record.value[0] == MAGIC_BYTE
            }
        )
        for schema_id in ids:
            try:
                await decoder.writer_schema(schema_id)
            except InvalidEvent:
                pass  # refused: the handler dead-letters those records with the reason

    def abandon(self) -> None:
        """A rebalance or a stop: the waiting batches are given up unacknowledged (read again later)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
        while self._backlog:
            _, future = self._backlog.popleft()
            if not future.done():
                future.set_exception(NotProcessed("waiting for the schema registry"))
        self._resume()

    async def stop(self) -> None:
        """At the worker's stop: waiting batches are not acknowledged; the next owner reads them."""
        task = self._task
        self.abandon()
        if task is not None:
            try:
                await task
            except asyncio.CancelledError:
                pass


schema_registry = SchemaRegistryService()
app.service(schema_registry)  # type: ignore[arg-type]  # faust starts instances as well as classes


async def decode_avro_value(value: bytes | None) -> dict[str, Any]:
    """Decode a Confluent-framed Avro value by its schema id (InvalidEvent when it cannot be)."""
    decoder = await schema_registry.until_ready()
    return await decoder.decode(value)
