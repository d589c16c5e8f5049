"""Security settings for every Kafka client the app opens, and a pre-flight check of the credentials."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Any

import faust
from aiokafka import errors as kafka_errors
from aiokafka.conn import create_conn
from aiokafka.protocol.coordination import FindCoordinatorRequest
from aiokafka.protocol.metadata import MetadataRequest
from faust.types.auth import CredentialsT

from streamapp.settings import Settings

__all__ = [
    "KafkaAccessError",
    "broker_credentials",
    "check_access",
    "client_kwargs",
    "ssl_context",
]


class KafkaAccessError(RuntimeError):
    """The broker cannot be used with these settings; the message says why in one line."""


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A verifying TLS context (trusting ``STREAMAPP_SSL_CAFILE`` if set), or None for PLAINTEXT."""
    if settings.security_protocol == "PLAINTEXT":
        return None
    cafile = str(settings.ssl_cafile) if settings.ssl_cafile is not None else None
    return ssl.create_default_context(cafile=cafile)


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (consumer, producer, admin) of these settings."""
    if settings.security_protocol == "PLAINTEXT":
        return {"security_protocol": "PLAINTEXT"}
    kwargs: dict[str, Any] = {
        "security_protocol": settings.security_protocol,
        "ssl_context": ssl_context(settings),
    }
    if settings.security_protocol == "SASL_SSL":
        kwargs.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password,
        )
    return kwargs


def broker_credentials(settings: Settings) -> CredentialsT | None:
    """faust's ``broker_credentials`` for these settings (consumer, producer, admin, transactions)."""
    if settings.security_protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings)
    assert context is not None
    if settings.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    assert settings.sasl_username and settings.sasl_password and settings.sasl_mechanism
    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=settings.sasl_password,
        mechanism=settings.sasl_mechanism,
        ssl_context=context,
    )


def _who(settings: Settings) -> str:
    if settings.security_protocol == "SASL_SSL":
        mechanism = f"{settings.sasl_mechanism} over SASL_SSL"
        return f"user {settings.sasl_username!r} ({mechanism})"
    return f"a {settings.security_protocol} client"


#: the contract topics a worker reads or writes (before ``STREAMAPP_TOPIC_PREFIX``):
#: what :func:`check_access` asks for unless given the topics
APP_TOPICS = (
    "logins", "sensor-readings", "transactions", "stock-prices", "users", "alerts", "dead-letters",
)  # fmt: skip


async def check_access(settings: Settings, topics: Iterable[str] | None = None, within: float = 15.0) -> None:
    """Connect, authenticate and ask for the app's topics and group: raise :class:`KafkaAccessError`.

    Faust retries a refused login or a broken TLS handshake for ever; this check turns them into
    one clear line before the worker starts. It tries each bootstrap server until one answers.
    """
    wanted = list(topics) if topics is not None else [settings.topic(t) for t in APP_TOPICS]
    problems: list[str] = []
    for server in settings.bootstrap_servers:
        host, _, port = server.rpartition(":")
        try:
            await asyncio.wait_for(_check_one(settings, host, int(port), wanted), within)
            return
        except KafkaAccessError:
            raise
        except (TimeoutError, OSError, kafka_errors.KafkaError) as exc:
            problems.append(f"{server}: {_describe(exc)}")
    raise KafkaAccessError(
        f"cannot reach the Kafka broker {settings.broker} ({'; '.join(problems)}): is it running, and "
        f"is STREAMAPP_SECURITY_PROTOCOL={settings.security_protocol} the protocol of that listener?"
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


async def _check_one(settings: Settings, host: str, port: int, topics: list[str]) -> None:
    try:
        conn = await create_conn(host, port, request_timeout_ms=10_000, **client_kwargs(settings))
    except kafka_errors.SaslAuthenticationFailed as exc:
        raise KafkaAccessError(
            f"Kafka authentication failed for {_who(settings)} at {host}:{port}: wrong "
            f"STREAMAPP_SASL_USERNAME or STREAMAPP_SASL_PASSWORD, or wrong STREAMAPP_SASL_MECHANISM "
            f"({exc})"
        ) from None
    except kafka_errors.UnsupportedSaslMechanismError as exc:
        raise KafkaAccessError(f"Kafka authentication failed at {host}:{port}: {exc}") from None
    except ssl.SSLCertVerificationError as exc:
        raise KafkaAccessError(
            f"TLS failure with the Kafka broker at {host}:{port}: its certificate is not trusted "
            f"({exc.verify_message}); set STREAMAPP_SSL_CAFILE to the CA that signed it"
        ) from None
    except ssl.SSLError as exc:
        raise KafkaAccessError(
            f"TLS failure with the Kafka broker at {host}:{port} ({exc.reason or exc}): does that port "
            f"speak {settings.security_protocol}?"
        ) from None
    try:
        metadata = await conn.send(MetadataRequest(topics, allow_auto_topic_creation=False))
        denied = [
            topic
            for error, topic, *_ in metadata.topics
            if error == kafka_errors.TopicAuthorizationFailedError.errno
        ]
        if denied:
            raise KafkaAccessError(
                f"Kafka authorization failed: {_who(settings)} may not use topic(s) "
                f"{', '.join(sorted(denied))} (add ACLs for the principal, see docs/security.md)"
            )
        coordinator = await conn.send(FindCoordinatorRequest(settings.app_id, 0))
        if coordinator.error_code == kafka_errors.GroupAuthorizationFailedError.errno:
            raise KafkaAccessError(
                f"Kafka authorization failed: {_who(settings)} may not use consumer group "
                f"{settings.app_id!r} (add ACLs for the principal, see docs/security.md)"
            )
    finally:
        conn.close()
