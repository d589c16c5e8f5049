"""A client for the Confluent-compatible schema registry API (Apicurio's /apis/ccompat/v7), on aiohttp."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from streamapp.schema.avro import RegisteredSchema

__all__ = [
    "COMPATIBILITY_LEVELS",
    "SCHEMA_NOT_FOUND",
    "Compatibility",
    "SchemaRegistryClient",
    "SchemaRegistryError",
    "SchemaRegistryUnavailable",
]

COMPATIBILITY_LEVELS = (
    "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE", "NONE",
)  # fmt: skip
_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
#: the Confluent API's "schema not found": told apart from a 404 for a wrong base URL
SCHEMA_NOT_FOUND = 40403
# Apicurio prefixes its reasons with the Java exception class: users need only the reason
_JAVA_CLASS = re.compile(r"^(?:[a-z_][\w$]*\.)+[A-Z][\w$]*(?:Exception|Error): ")


class SchemaRegistryError(Exception):
    """The registry answered with an error; ``reason`` is its message, readable."""

    def __init__(self, status: int, error_code: int | None, reason: str) -> None:
        super().__init__(f"{reason} (HTTP {status}, error code {error_code})")
        self.status = status
        self.error_code = error_code
        self.reason = reason


class SchemaRegistryUnavailable(Exception):
    """The registry could not be reached, or failed (5xx): try again later."""


@dataclass(frozen=True)
class Compatibility:
    """The answer to "may this schema be registered under the subject?"."""

    is_compatible: bool
    level: str | None
    messages: list[str] = field(default_factory=list)


class SchemaRegistryClient:
    """Register, look up and check schemas; fetch schemas by id.

    ``url`` is the API root, e.g. ``http://127.0.0.1:8081/apis/ccompat/v7``. Pass a session to
    share one; otherwise use the client as ``async with`` and it opens and closes its own.
    """

    def __init__(self, url: str, session: aiohttp.ClientSession | None = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def __aenter__(self) -> SchemaRegistryClient:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if self._session is None:
            raise RuntimeError("SchemaRegistryClient used outside `async with` and without a session")
        try:
            async with self._session.request(
                method, self.url + path, json=body, timeout=self._timeout,
                headers={"Content-Type": _CONTENT_TYPE, "Accept": _CONTENT_TYPE + ", application/json"},
            ) as resp:  # fmt: skip
                text = await resp.text()
                if resp.status >= 500:
                    raise SchemaRegistryUnavailable(
                        f"schema registry at {self.url} failed: HTTP {resp.status} {text[:200]}"
                    )
                data = _json_or_text(text)
                if resp.status >= 400:
                    raise _error(resp.status, data)
                return data
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SchemaRegistryUnavailable(
                f"schema registry at {self.url} cannot be reached: {type(exc).__name__}: {exc}"
            ) from None

    # -- schemas by id ---------------------------------------------------------------------
    async def schema_by_id(self, schema_id: int) -> RegisteredSchema | None:
        """The schema registered under ``schema_id``, or None when the registry says there is none.

        Any other error (a 404 without the registry's "schema not found" code means a wrong URL)
        raises :class:`SchemaRegistryError`.
        """
        try:
            data = await self._request("GET", f"/schemas/ids/{int(schema_id)}")
        except SchemaRegistryError as exc:
            if exc.status == 404 and exc.error_code == SCHEMA_NOT_FOUND:
                return None
            raise
        return RegisteredSchema(schema_id, data["schema"], data.get("schemaType") or "AVRO")

    # -- subjects ----------------------------------------------------------------------------
    async def register(self, subject: str, schema: str, schema_type: str = "AVRO") -> int:
        """Register ``schema`` under ``subject`` (the same schema again gives the same id).

        Raises :class:`SchemaRegistryError` with the registry's reason when refused, e.g. HTTP 409
        for a schema that breaks the subject's compatibility rule.
        """
        body: dict[str, Any] = {"schema": schema}
        if schema_type != "AVRO":
            body["schemaType"] = schema_type
        data = await self._request("POST", f"/subjects/{_q(subject)}/versions", body)
        return int(data["id"])

    async def lookup(self, subject: str, schema: str) -> int | None:
        """The id of ``schema`` if it is registered under ``subject``, else None."""
        try:
            data = await self._request("POST", f"/subjects/{_q(subject)}", {"schema": schema})
        except SchemaRegistryError as exc:
            if exc.status == 404:
                return None
            raise
        return int(data["id"])

    async def versions(self, subject: str) -> list[int]:
        """The version numbers under ``subject`` (empty when the subject does not exist)."""
        try:
            return [int(v) for v in await self._request("GET", f"/subjects/{_q(subject)}/versions")]
        except SchemaRegistryError as exc:
            if exc.status == 404:
                return []
            raise

    async def version(self, subject: str, version: int | str = "latest") -> dict[str, Any]:
        """``{"subject", "version", "id", "schema"}`` of one version."""
        data: dict[str, Any] = await self._request("GET", f"/subjects/{_q(subject)}/versions/{version}")
        return data

    async def subjects_of(self, schema_id: int) -> frozenset[str]:
        """The subjects ``schema_id`` is registered under (empty when the id is unknown)."""
        try:
            data = await self._request("GET", f"/schemas/ids/{int(schema_id)}/versions")
        except SchemaRegistryError as exc:
            if exc.status == 404 and exc.error_code == SCHEMA_NOT_FOUND:
                return frozenset()
            raise
        return frozenset(str(entry["subject"]) for entry in data)

    async def subjects(self) -> list[str]:
        return [str(s) for s in await self._request("GET", "/subjects")]

    # -- compatibility -------------------------------------------------------------------
    async def compatibility(self, subject: str) -> str | None:
        """The subject's own compatibility level, or None when it has none."""
        try:
            data = await self._request("GET", f"/config/{_q(subject)}")
        except SchemaRegistryError as exc:
            if exc.status == 404:
                return None
            raise
        level = data.get("compatibilityLevel") or data.get("compatibility")
        return str(level) if level else None

    async def set_compatibility(self, subject: str, level: str) -> str:
        if level not in COMPATIBILITY_LEVELS:
            raise ValueError(f"compatibility must be one of {', '.join(COMPATIBILITY_LEVELS)}")
        data = await self._request("PUT", f"/config/{_q(subject)}", {"compatibility": level})
        return str(data.get("compatibility") or data.get("compatibilityLevel") or level)

    async def check(self, subject: str, schema: str, version: int | str = "latest") -> Compatibility:
        """Whether ``schema`` may follow ``version`` of ``subject`` under the subject's rule."""
        level = await self.compatibility(subject)
        if not await self.versions(subject):
            return Compatibility(True, level, ["the subject has no versions yet: any valid schema goes"])
        path = f"/compatibility/subjects/{_q(subject)}/versions/{version}?verbose=true"
        data = await self._request("POST", path, {"schema": schema})
        messages = [str(m) for m in data.get("messages") or []]
        return Compatibility(bool(data.get("is_compatible")), level, messages)


def _q(subject: str) -> str:
    return quote(subject, safe="")


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


def _error(status: int, data: Any) -> SchemaRegistryError:
    if isinstance(data, dict):
        message = str(data.get("message") or data.get("detail") or data)
        code = data.get("error_code")
    else:
        message, code = str(data or "")[:300], None
    reason = _JAVA_CLASS.sub("", message.strip())
    return SchemaRegistryError(status, int(code) if isinstance(code, int) else None, reason)
