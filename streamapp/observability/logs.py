"""Log output: readable text by default, JSON lines with STREAMAPP_LOG_FORMAT=json, secrets redacted."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from streamapp.settings import Settings, load_settings

__all__ = [
    "REDACTED",
    "TEXT_FORMAT",
    "JsonFormatter",
    "RedactSecrets",
    "TextFormatter",
    "configure_logging",
    "logging_config",
    "secrets_of",
]

REDACTED = "***"
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

#: attributes every LogRecord has; anything else on a record came in through ``extra=``
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "extra",  # mode's DefaultFormatter renders extras into this attribute
    "data",  # mode's CompositeLogger passes its own context here
}
_DSN_KEYWORD_PASSWORD = re.compile(r"""password\s*=\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s]+)""")


def secrets_of(settings: Settings) -> list[str]:
    """Every secret the settings hold, longest first (so a secret inside another goes too)."""
    found = {settings.sasl_password, settings.web_token, settings.peer_secret}
    dsn = settings.postgres_dsn
    if dsn:
        # URL form postgresql://user:password@host/db (maybe percent-encoded) ...
        try:
            password = urlsplit(dsn).password
        except ValueError:
            password = None
        if password:
            found |= {password, unquote(password)}
        # ... or keyword form "host=db user=app password=secret"
        for quoted in _DSN_KEYWORD_PASSWORD.findall(dsn):
            found |= {quoted, quoted.strip("'\"")}
    return sorted((s for s in found if s), key=len, reverse=True)


class RedactSecrets(logging.Filter):
    """Handler filter: replaces every secret in a record's message, extras and traceback.

    A safety net: code should not log secrets in the first place. Without ``secrets`` it takes
    them from the ``STREAMAPP_*`` settings of this process.
    """

    def __init__(self, secrets: Iterable[str] | None = None) -> None:
        super().__init__()
        if secrets is None:
            try:
                secrets = secrets_of(load_settings())
            except ValueError:  # a bad setting stops the process elsewhere; redact what is set
                secrets = [
                    os.environ[name]
                    for name in ("STREAMAPP_SASL_PASSWORD", "STREAMAPP_WEB_TOKEN", "STREAMAPP_PEER_SECRET")
                    if os.environ.get(name)
                ]
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in _RECORD_FIELDS and isinstance(value, str):
                setattr(record, name, self.redact(value))
        return True


class TextFormatter(logging.Formatter):
    """One readable line: ``2026-01-01 12:00:00,123 INFO    streamapp.pipeline.alerting: alert ...``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601, UTC), level, logger, message, pid, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name, value in vars(record).items():
            if name not in _RECORD_FIELDS and not name.startswith("_") and name not in entry:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _formatter_path(log_format: str) -> str:
    return f"{__name__}.{'JsonFormatter' if log_format == 'json' else 'TextFormatter'}"


def logging_config(settings: Settings) -> dict[str, Any]:
    """faust's ``logging_config``: mode's setup (root level from ``--loglevel``) with our handler.

    ``merge`` keeps mode's root logger and level and replaces its colored handler by one that
    writes our format to stderr through the secret filter.
    """
    return {
        "version": 1,
        "merge": True,
        "disable_existing_loggers": False,
        "formatters": {"streamapp": {"()": _formatter_path(settings.log_format)}},
        "filters": {"redact_secrets": {"()": f"{__name__}.RedactSecrets"}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "streamapp",
                "filters": ["redact_secrets"],
            }
        },
    }


def configure_logging(settings: Settings, level: str | None = None) -> None:
    """Logging for commands other than the worker (which faust configures from ``logging_config``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(RedactSecrets(secrets_of(settings)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or settings.log_level).upper())
