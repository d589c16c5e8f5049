"""Settings from ``STREAMAPP_*`` environment variables, validated once at start."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

__all__ = [
    "ALERT_KINDS",
    "BATCH_MAX",
    "BATCH_WITHIN_SECONDS",
    "MIN_SECRET_CHARS",
    "MIN_STALL_SECONDS",
    "PREFIX",
    "Settings",
    "SettingsError",
    "Thresholds",
    "load_settings",
]

PREFIX = "STREAMAPP_"

#: agents take up to this many records at a time, waiting at most this long for a batch to fill:
#: batches amortise per-record overhead; the wait bounds the latency it adds when traffic is light
BATCH_MAX = 1000
BATCH_WITHIN_SECONDS = 0.02
T = TypeVar("T")

#: the contract's detection rules, each an alert ``kind``
ALERT_KINDS = (
    "brute_force",
    "account_takeover",
    "high_temperature",
    "temperature_anomaly",
    "card_velocity",
    "amount_spike",
)


class SettingsError(ValueError):
    """A setting has a bad value; the message names the variable."""


@dataclass(frozen=True)
class Thresholds:
    """Detection rule thresholds (contract defaults)."""

    brute_force_failures: int = 5
    account_takeover_failures: int = 3
    high_temperature: float = 100.0
    temperature_anomaly_sigmas: float = 4.0
    temperature_anomaly_min_readings: int = 30
    card_velocity_transactions: int = 5
    amount_spike_factor: float = 10.0
    amount_spike_min_transactions: int = 5


@dataclass(frozen=True)
class Settings:
    """Everything a worker or command needs to know about its environment."""

    broker: str = "kafka://127.0.0.1:9092"
    data_dir: Path = Path("data")
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    partitions: int = 8
    #: replicas of the topics the app creates (None: min(3, brokers the cluster reports))
    replication_factor: int | None = None
    processing_guarantee: str = "at_least_once"
    schema_registry_url: str | None = None
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None
    web_token: str | None = field(default=None, repr=False)
    #: proves a forwarding worker belongs to the app (default: derived from web_token)
    peer_secret: str | None = field(default=None, repr=False)
    postgres_dsn: str | None = field(default=None, repr=False)
    influx_url: str | None = None
    app_id: str = "streamapp"
    topic_prefix: str = ""
    retention_seconds: int = 3600
    #: how far behind the newest event of its key an event may arrive and still count as in order
    grace_seconds: float = 60.0
    max_record_bytes: int = 1_048_576
    #: hostile input: events dated further ahead of the wall clock, and amounts or prices above
    #: these, are dead letters (see streamapp.models.Limits)
    max_clock_skew_seconds: float = 300.0
    max_amount: float = 1e9
    max_price: float = 1e9
    log_level: str = "info"
    log_format: str = "text"
    publish_alerts: bool = True
    #: flow control: records a worker takes per fetch, and events each agent may buffer. A fetch
    #: is one call of a batch handler: per-batch costs (the consumer thread's hand-over, one
    #: RocksDB write and one produce request per partition) are shared by up to this many records
    max_poll_records: int = 2000
    stream_buffer: int = 10000
    thresholds: Thresholds = Thresholds()
    #: the shipped detections this worker runs, as their specs of detections/ on the detection
    #: engine (STREAMAPP_RULES; default every one; see streamapp.detections.shipped)
    rules: frozenset[str] = frozenset(ALERT_KINDS)
    #: an owned partition with lag and no progress this long makes GET /live fail (liveness watchdog)
    stall_seconds: float = 120.0
    #: the source topics of detections subscribed at start (STREAMAPP_DETECTION_TOPICS; a spec on
    #: another topic subscribes the running workers to it, streamapp.runtime.subscriptions)
    detection_topics: tuple[str, ...] = ("network-flows",)
    #: the archive (streamapp.archive): s3://bucket/prefix, an S3 endpoint (default AWS), credentials
    archive_url: str | None = None
    archive_endpoint: str | None = None
    archive_access_key: str | None = None
    archive_secret_key: str | None = field(default=None, repr=False)
    archive_region: str = "us-east-1"
    #: an open archive object is uploaded once it holds this many bytes of values or is this old
    archive_roll_bytes: int = 16 * 1024 * 1024
    archive_roll_seconds: float = 60.0
    #: autoscaling (streamapp_recommended_workers): clear a backlog within this long, and lower the
    #: recommendation only after the need stayed lower this long
    autoscale_drain_seconds: float = 60.0
    autoscale_scale_down_seconds: float = 120.0

    @property
    def bootstrap_servers(self) -> list[str]:
        """Broker URL in the form aiokafka takes (``host:port`` list)."""
        hosts = self.broker.split("://", 1)[-1]
        return [h.strip() for h in hosts.replace(",", ";").split(";") if h.strip()]

    def topic(self, name: str) -> str:
        """The full name of a contract topic (``STREAMAPP_TOPIC_PREFIX`` isolates test runs)."""
        return f"{self.topic_prefix}{name}"


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 65535:
        raise ValueError("must be a port number 1-65535")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError("must be a positive number")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not 0 <= value < float("inf"):
        raise ValueError("must be a number of seconds, 0 or more")
    return value


#: a year ahead is more than any clock drift; it keeps "now + skew" below the parser's
#: milliseconds cut-off (2100-01-01) for this century
MAX_CLOCK_SKEW_LIMIT = 365 * 86400.0
#: amounts and prices stay where a float still holds cents and no sum of them can overflow
MAX_VALUE_LIMIT = 1e15


def _at_most(limit: float) -> Callable[[str], float]:
    def positive_number(raw: str) -> float:
        value = float(raw)
        if not 0 < value <= limit:  # NaN fails too
            raise ValueError(f"must be a positive number at most {limit:.0f}")
        return value

    return positive_number


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return raw

    return parse


def _rule_engine(raw: str) -> str:
    # STREAMAPP_RULE_ENGINE is read only to refuse what it no longer selects, before a worker starts
    if raw == "hand-written":
        raise ValueError(
            "hand-written was removed: the shipped detections run as specs on the detection engine "
            "(leave it unset or set it to specs)"
        )
    if raw != "specs":
        raise ValueError("must be specs (the only engine: leave it unset)")
    return raw


#: shortest STREAMAPP_WEB_TOKEN / STREAMAPP_PEER_SECRET: a few characters can be guessed online
MIN_SECRET_CHARS = 16
#: the watchdog looks every 5 s (streamapp.observability.monitoring): a shorter stall time could not be seen
MIN_STALL_SECONDS = 10.0


def _secret(raw: str) -> str:
    if len(raw) < MIN_SECRET_CHARS:
        raise ValueError(f"must be at least {MIN_SECRET_CHARS} characters (e.g. `openssl rand -hex 24`)")
    return raw


def _stall_seconds(raw: str) -> float:
    value = _positive_float(raw)
    if value < MIN_STALL_SECONDS:
        raise ValueError(f"must be at least {MIN_STALL_SECONDS:g} seconds")
    return value


def _topic_list(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for name in raw.split(",") if name.strip()))
    bad = [name for name in names if not re.fullmatch(r"[A-Za-z0-9._-]{1,200}", name)]
    if bad or not names:
        raise ValueError("must be a comma-separated list of topic names (letters, digits, '.', '_', '-')")
    return names


def _rules(raw: str) -> frozenset[str]:
    if raw.lower() == "all":
        return frozenset(ALERT_KINDS)
    if raw.lower() == "none":  # no shipped detection: those of the control topic alone (docs/detections.md)
        return frozenset()
    kinds = [kind.strip() for kind in raw.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in ALERT_KINDS]
    if unknown or not kinds:
        prefix = f"unknown rule {', '.join(map(repr, unknown))}; " if unknown else ""
        raise ValueError(
            f"{prefix}must be 'all', 'none' or a comma-separated list of {', '.join(ALERT_KINDS)}"
        )
    return frozenset(kinds)


def _boolean(raw: str) -> bool:
    value = raw.lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _broker_url(raw: str) -> str:
    url = raw if "://" in raw else f"kafka://{raw}"
    scheme, hosts = url.split("://", 1)
    if scheme != "kafka":
        raise ValueError("must look like kafka://host:port[;host:port]")
    for host in hosts.replace(",", ";").split(";"):
        name, _, port = host.strip().rpartition(":")
        if not name or not port.isdigit():
            raise ValueError(f"{host!r} is not host:port")
    return url


def _http_url(raw: str) -> str:
    parsed = urlparse(raw)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an http(s):// URL")
    return raw.rstrip("/")


def _postgres_dsn(raw: str) -> str:
    if "://" not in raw and "host=" in raw:
        return raw  # libpq keyword form: host=... port=... user=... password=... dbname=...
    parsed = urlparse(raw)
    if parsed.scheme not in ("postgresql", "postgres") or not parsed.hostname:
        raise ValueError("must look like postgresql://user[:password]@host[:port]/database")
    return raw


def _existing_file(raw: str) -> Path:
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ValueError(f"file {path} does not exist")
    return path


def _directory(raw: str) -> Path:
    return Path(raw).expanduser()


def _archive_url(raw: str) -> str:
    parsed = urlparse(raw)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError("must look like s3://bucket/prefix")
    bucket = parsed.netloc
    allowed = all(c.isalnum() or c in ".-" for c in bucket) and bucket == bucket.lower()
    if not (3 <= len(bucket) <= 63 and allowed):
        raise ValueError(f"bucket {bucket!r} is not a bucket name (3-63 lowercase letters, digits, '.', '-')")
    if parsed.query or parsed.fragment:
        raise ValueError("must look like s3://bucket/prefix (no ? or #)")
    return f"s3://{bucket}/{parsed.path.strip('/')}".rstrip("/")


def _topic_prefix(raw: str) -> str:
    if not all(c.isalnum() or c in "._-" for c in raw):
        raise ValueError("may hold only letters, digits, '.', '_' and '-'")
    return raw


#: set but blank is refused, not read as unset: a blank token would leave the web API open by mistake
_NOT_BLANK = frozenset({"WEB_TOKEN", "PEER_SECRET"})


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate settings; raise :class:`SettingsError` naming the bad variable."""
    env = os.environ if environ is None else environ
    defaults = Settings()
    base = Thresholds()

    def get(name: str, parse: Callable[[str], T], default: T) -> T:
        raw = env.get(PREFIX + name)
        if raw is None or (raw == "" and name not in _NOT_BLANK):
            return default
        try:
            return parse(raw.strip())
        except ValueError as exc:
            reason = (
                str(exc)
                if not str(exc).startswith(("invalid literal", "could not"))
                else (f"must be a {parse.__name__.lstrip('_').replace('_', ' ')}")
            )
            shown = "(hidden)" if name in _NOT_BLANK else repr(raw)  # never echo a secret
            raise SettingsError(f"{PREFIX}{name}={shown} is invalid: {reason}") from None

    def text(raw: str) -> str:
        return raw

    get("RULE_ENGINE", _rule_engine, "specs")  # refused unless specs (streamapp.detections.shipped)
    thresholds = Thresholds(
        brute_force_failures=get("BRUTE_FORCE_THRESHOLD", _positive_int, base.brute_force_failures),
        account_takeover_failures=get(
            "ACCOUNT_TAKEOVER_THRESHOLD", _positive_int, base.account_takeover_failures
        ),
        high_temperature=get("HIGH_TEMPERATURE_THRESHOLD", float, base.high_temperature),
        temperature_anomaly_sigmas=get(
            "TEMPERATURE_ANOMALY_SIGMAS", _positive_float, base.temperature_anomaly_sigmas
        ),
        temperature_anomaly_min_readings=get(
            "TEMPERATURE_ANOMALY_MIN_READINGS", _positive_int, base.temperature_anomaly_min_readings
        ),
        card_velocity_transactions=get(
            "CARD_VELOCITY_THRESHOLD", _positive_int, base.card_velocity_transactions
        ),
        amount_spike_factor=get("AMOUNT_SPIKE_FACTOR", _positive_float, base.amount_spike_factor),
        amount_spike_min_transactions=get(
            "AMOUNT_SPIKE_MIN_TRANSACTIONS", _positive_int, base.amount_spike_min_transactions
        ),
    )
    settings = Settings(
        broker=get("BROKER", _broker_url, defaults.broker),
        # absolute once, here: faust joins a relative tabledir onto datadir/v1 (data/w1/v1/data/w1/tables)
        # and child processes (demo, replay) may start in another directory
        data_dir=get("DATA_DIR", _directory, defaults.data_dir).absolute(),
        web_port=get("WEB_PORT", _port, defaults.web_port),
        web_host=get("WEB_HOST", text, defaults.web_host),
        partitions=get("PARTITIONS", _positive_int, defaults.partitions),
        replication_factor=get("REPLICATION_FACTOR", _positive_int, None),
        processing_guarantee=get(
            "PROCESSING_GUARANTEE",
            _choice("at_least_once", "exactly_once"),
            defaults.processing_guarantee,
        ),  # fmt: skip
        schema_registry_url=get("SCHEMA_REGISTRY_URL", _http_url, None),
        security_protocol=get(
            "SECURITY_PROTOCOL", _choice("PLAINTEXT", "SASL_SSL", "SSL"), defaults.security_protocol
        ),
        sasl_mechanism=get("SASL_MECHANISM", _choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"), None),
        sasl_username=get("SASL_USERNAME", text, None),
        sasl_password=get("SASL_PASSWORD", text, None),
        ssl_cafile=get("SSL_CAFILE", _existing_file, None),
        web_token=get("WEB_TOKEN", _secret, None),
        peer_secret=get("PEER_SECRET", _secret, None),
        postgres_dsn=get("POSTGRES_DSN", _postgres_dsn, None),
        influx_url=get("INFLUX_URL", _http_url, None),
        app_id=get("APP_ID", _topic_prefix, defaults.app_id),
        topic_prefix=get("TOPIC_PREFIX", _topic_prefix, defaults.topic_prefix),
        retention_seconds=get("RETENTION_SECONDS", _positive_int, defaults.retention_seconds),
        grace_seconds=get("GRACE_SECONDS", _non_negative_float, defaults.grace_seconds),
        max_record_bytes=get("MAX_RECORD_BYTES", _positive_int, defaults.max_record_bytes),
        max_clock_skew_seconds=get(
            "MAX_CLOCK_SKEW_SECONDS", _at_most(MAX_CLOCK_SKEW_LIMIT), defaults.max_clock_skew_seconds
        ),
        max_amount=get("MAX_AMOUNT", _at_most(MAX_VALUE_LIMIT), defaults.max_amount),
        max_price=get("MAX_PRICE", _at_most(MAX_VALUE_LIMIT), defaults.max_price),
        log_level=get("LOG_LEVEL", _choice("debug", "info", "warning", "error"), defaults.log_level),
        log_format=get("LOG_FORMAT", _choice("text", "json"), defaults.log_format),
        publish_alerts=get("PUBLISH_ALERTS", _boolean, defaults.publish_alerts),
        max_poll_records=get("MAX_POLL_RECORDS", _positive_int, defaults.max_poll_records),
        stream_buffer=get("STREAM_BUFFER", _positive_int, defaults.stream_buffer),
        thresholds=thresholds,
        rules=get("RULES", _rules, defaults.rules),
        stall_seconds=get("STALL_SECONDS", _stall_seconds, defaults.stall_seconds),
        detection_topics=get("DETECTION_TOPICS", _topic_list, defaults.detection_topics),
        archive_url=get("ARCHIVE_URL", _archive_url, None),
        archive_endpoint=get("ARCHIVE_ENDPOINT", _http_url, None),
        archive_access_key=get("ARCHIVE_ACCESS_KEY", text, None),
        archive_secret_key=get("ARCHIVE_SECRET_KEY", text, None),
        archive_region=get("ARCHIVE_REGION", _topic_prefix, defaults.archive_region),
        archive_roll_bytes=get("ARCHIVE_ROLL_BYTES", _positive_int, defaults.archive_roll_bytes),
        archive_roll_seconds=get("ARCHIVE_ROLL_SECONDS", _positive_float, defaults.archive_roll_seconds),
        autoscale_drain_seconds=get(
            "AUTOSCALE_DRAIN_SECONDS", _positive_float, defaults.autoscale_drain_seconds
        ),
        autoscale_scale_down_seconds=get(
            "AUTOSCALE_SCALE_DOWN_SECONDS", _non_negative_float, defaults.autoscale_scale_down_seconds
        ),
    )
    _check_combinations(settings)
    return settings


def _check_combinations(settings: Settings) -> None:
    if settings.security_protocol == "SASL_SSL":
        for name, value in (
            ("SASL_MECHANISM", settings.sasl_mechanism),
            ("SASL_USERNAME", settings.sasl_username),
            ("SASL_PASSWORD", settings.sasl_password),
        ):
            if not value:
                raise SettingsError(f"{PREFIX}{name} is required when {PREFIX}SECURITY_PROTOCOL=SASL_SSL")
    if bool(settings.archive_access_key) != bool(settings.archive_secret_key):
        given, missing = (
            ("ARCHIVE_ACCESS_KEY", "ARCHIVE_SECRET_KEY")
            if settings.archive_access_key
            else ("ARCHIVE_SECRET_KEY", "ARCHIVE_ACCESS_KEY")
        )
        raise SettingsError(f"{PREFIX}{missing} is required when {PREFIX}{given} is set")
    if settings.max_poll_records * 5 > settings.stream_buffer:
        # faust pauses a partition when its agent's buffer is 80% full; the rest of the fetch in
        # hand must still fit, or the whole consumer (every topic) waits for that one agent
        raise SettingsError(
            f"{PREFIX}MAX_POLL_RECORDS={settings.max_poll_records} is invalid: must be at most a fifth "
            f"of {PREFIX}STREAM_BUFFER ({settings.stream_buffer})"
        )
    if settings.grace_seconds > settings.retention_seconds / 2:
        raise SettingsError(
            f"{PREFIX}GRACE_SECONDS={settings.grace_seconds:g} is invalid: must be at most half of "
            f"{PREFIX}RETENTION_SECONDS ({settings.retention_seconds})"
        )
    if settings.retention_seconds < 3600:
        raise SettingsError(
            f"{PREFIX}RETENTION_SECONDS={settings.retention_seconds} is invalid: "
            "must keep at least one hour (3600) of windows"
        )


def describe(settings: Settings) -> dict[str, Any]:
    """Settings for logs, with secrets masked."""
    secret = {"sasl_password", "web_token", "peer_secret", "postgres_dsn", "archive_secret_key"}
    return {
        k: ("***" if k in secret and v else str(v)) for k, v in settings.__dict__.items() if k != "thresholds"
    }
