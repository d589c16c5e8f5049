"""Log formats: JSON lines with extras, readable text, secrets redacted; STREAMAPP_LOG_FORMAT."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator

import pytest

from streamapp.observability.logs import (
    JsonFormatter,
    RedactSecrets,
    TextFormatter,
    configure_logging,
    logging_config,
    secrets_of,
)
from streamapp.settings import SettingsError, load_settings


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Leave the root logger as the test found it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom with " + str(extra.pop("exc_text", "")))
        except RuntimeError:
            import sys

            exc_info = sys.exc_info()
    record = logging.LogRecord("streamapp.test", logging.WARNING, __file__, 1, msg, args, exc_info)
    for name, value in extra.items():
        setattr(record, name, value)
    return record


def test_log_format_setting() -> None:
    assert load_settings({}).log_format == "text"
    assert load_settings({"STREAMAPP_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(SettingsError, match="STREAMAPP_LOG_FORMAT"):
        load_settings({"STREAMAPP_LOG_FORMAT": "xml"})


def test_json_formatter_writes_one_object_with_extras() -> None:
    record = _record("alert %s key=%s", "brute_force", "10.0.0.1", kind="brute_force", key="10.0.0.1")
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "alert brute_force key=10.0.0.1"
    assert entry["level"] == "warning" and entry["logger"] == "streamapp.test"
    assert entry["kind"] == "brute_force" and entry["key"] == "10.0.0.1"
    assert entry["ts"].endswith("Z") and "T" in entry["ts"]
    failed = json.loads(JsonFormatter().format(_record("failed", exc=True, odd=object())))
    assert "RuntimeError: boom" in failed["exception"] and failed["odd"].startswith("<object")


def test_text_formatter_is_one_readable_line() -> None:
    line = TextFormatter().format(_record("dead letter key=%r", "k1"))
    assert line.endswith("WARNING streamapp.test: dead letter key='k1'")


def test_secrets_come_from_every_secret_setting() -> None:
    settings = load_settings(
        {
            "STREAMAPP_SASL_PASSWORD": "sasl-pw",
            "STREAMAPP_WEB_TOKEN": "web-token-0123456789",
            "STREAMAPP_POSTGRES_DSN": "postgresql://app:p%40ss@db:5432/streamapp",
        }
    )
    assert set(secrets_of(settings)) == {"sasl-pw", "web-token-0123456789", "p%40ss", "p@ss"}
    keyword = load_settings({"STREAMAPP_POSTGRES_DSN": "host=db user=app password='s3 cret' dbname=x"})
    assert "s3 cret" in secrets_of(keyword)
    assert secrets_of(load_settings({})) == []


def test_redaction_covers_message_arguments_extras_and_tracebacks() -> None:
    redact = RedactSecrets(["hunter2", "tok-123"])
    record = _record("login with %s and %r", "hunter2", {"token": "tok-123"}, key="tok-123")
    assert redact.filter(record)
    assert record.getMessage() == "login with *** and {'token': '***'}"
    assert record.key == "***"
    failed = _record("failed", exc=True, exc_text="hunter2")
    redact.filter(failed)
    assert "hunter2" not in JsonFormatter().format(failed) and "boom with ***" in failed.exc_text


def test_redaction_reads_this_process_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMAPP_WEB_TOKEN", "from-env-token")
    assert RedactSecrets().redact("Bearer from-env-token") == "Bearer ***"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_faust_logging_config_installs_our_handler(
    log_format: str, root_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMAPP_SASL_PASSWORD", "pw-in-env")
    settings = load_settings({"STREAMAPP_LOG_FORMAT": log_format, "STREAMAPP_SASL_PASSWORD": "pw-in-env"})
    config = logging_config(settings)
    assert config.pop("merge") is True  # mode merges it over its own config (root level, handlers)
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    logging.config.dictConfig({**config, "root": {"level": "INFO", "handlers": ["default"]}})
    logging.getLogger("streamapp.x").info("connecting with %s", "pw-in-env")
    out = stream.getvalue().strip()
    assert "pw-in-env" not in out and "connecting with ***" in out
    assert out.startswith("{") == (log_format == "json")


def test_configure_logging_for_commands(root_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(
        load_settings({"STREAMAPP_LOG_FORMAT": "json", "STREAMAPP_WEB_TOKEN": "t0k3n-0123456789ab"})
    )
    logging.getLogger("streamapp.ops.generate").info("sent with t0k3n-0123456789ab")
    entry = json.loads(capsys.readouterr().err)
    assert entry["message"] == "sent with ***"
