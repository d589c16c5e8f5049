"""The worker's schema registry client and writer-schema cache: a service started and stopped with the app."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from mode import Service

from streamapp.app import app, settings
from streamapp.avro import AvroDecoder, RegisteredSchema
from streamapp.dev.registry import DEFAULT_REGISTRY_URL
from streamapp.registry import SchemaRegistryClient, SchemaRegistryError, SchemaRegistryUnavailable

__all__ = ["DEFAULT_REGISTRY_URL", "SchemaRegistryService", "decode_avro_value", "schema_registry"]

logger = logging.getLogger(__name__)

_MAX_BACKOFF = 10.0


class SchemaRegistryService(Service):
    """Owns the HTTP session to the registry (opened on start, closed on stop) and the decoder.

    A registry that cannot be reached is waited for, with backoff, and never turns good records
    into dead letters: only an answer "no such schema id" does.
    """

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.url = url or settings.schema_registry_url or DEFAULT_REGISTRY_URL
        self._session: aiohttp.ClientSession | None = None
        self._client: SchemaRegistryClient | None = None
        self.decoder = AvroDecoder(self._fetch)
        self._ready = asyncio.Event()

    async def on_start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._client = SchemaRegistryClient(self.url, session=self._session)
        self._ready.set()
        logger.info("schema registry client for %s started", self.url)

    async def on_stop(self) -> None:
        self._ready.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def until_ready(self) -> AvroDecoder:
        """The decoder, once the service runs (the app starts services after table recovery)."""
        await self._ready.wait()
        return self.decoder

    async def _fetch(self, schema_id: int) -> RegisteredSchema | None:
        backoff = 0.5
        while True:
            client = self._client
            assert client is not None, "SchemaRegistryService used before it started"
            try:
                return await client.schema_by_id(schema_id)
            except SchemaRegistryUnavailable as exc:
                logger.warning("%s; retrying in %.1f s", exc, backoff)
            except SchemaRegistryError as exc:
                # not an answer about the id (wrong URL, no permission, ...): a problem to fix, not a
                # reason to dead-letter good records
                logger.warning(
                    "schema registry at %s cannot tell schema id %d: %s "
                    "(check STREAMAPP_SCHEMA_REGISTRY_URL); retrying in %.1f s",
                    self.url, schema_id, exc, backoff,
                )  # fmt: skip
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)


schema_registry = SchemaRegistryService()
app.service(schema_registry)  # type: ignore[arg-type]  # faust starts instances as well as classes


async def decode_avro_value(value: bytes | None) -> dict[str, Any]:
    """Decode a Confluent-framed Avro value by its schema id (InvalidEvent when it cannot be)."""
    decoder = await schema_registry.until_ready()
    return await decoder.decode(value)
