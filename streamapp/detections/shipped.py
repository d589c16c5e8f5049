"""The shipped detections (`detections/*.yaml`) as a worker runs them.

Each detection of STREAMAPP_RULES runs as its spec file with the worker's settings in it: the
threshold variables (STREAMAPP_BRUTE_FORCE_THRESHOLD, ...) and STREAMAPP_GRACE_SECONDS. These
are the worker's defaults: a record of the same name in the
`detections` control topic (a spec applied, or null: disabled) takes their place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from streamapp.detections.spec import Spec, SpecInvalid, load_file, load_text
from streamapp.settings import PREFIX, Settings, SettingsError

__all__ = ["LATE_EVENTS_TABLE", "SHIPPED_DIR", "THRESHOLD_SETTINGS", "late_events_label", "shipped_specs"]

#: the folder of the shipped spec files (in the source tree, beside the packages)
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "detections"

#: per shipped detection: (where in its spec, the streamapp.settings.Thresholds field, its variable)
THRESHOLD_SETTINGS: dict[str, list[tuple[str, str, str]]] = {
    "brute_force": [("value", "brute_force_failures", "BRUTE_FORCE_THRESHOLD")],
    "account_takeover": [("count", "account_takeover_failures", "ACCOUNT_TAKEOVER_THRESHOLD")],
    "high_temperature": [("value", "high_temperature", "HIGH_TEMPERATURE_THRESHOLD")],
    "temperature_anomaly": [
        ("value", "temperature_anomaly_sigmas", "TEMPERATURE_ANOMALY_SIGMAS"),
        ("min_samples", "temperature_anomaly_min_readings", "TEMPERATURE_ANOMALY_MIN_READINGS"),
    ],
    "card_velocity": [("value", "card_velocity_transactions", "CARD_VELOCITY_THRESHOLD")],
    "amount_spike": [
        ("value", "amount_spike_factor", "AMOUNT_SPIKE_FACTOR"),
        ("min_samples", "amount_spike_min_transactions", "AMOUNT_SPIKE_MIN_TRANSACTIONS"),
    ],
}

#: the table a shipped detection's late events name (docs/contract.md, `late-events`: `late event
#: for <table>`): the names of the contract, kept for consumers that match on them although no
#: table of those names exists; detections of one name share their late events (a late reading is
#: one record, not one per temperature detection)
LATE_EVENTS_TABLE: dict[str, str] = {
    "brute_force": "failed-logins-by-ip",
    "account_takeover": "logins-by-user",
    "high_temperature": "temperature-by-sensor",
    "temperature_anomaly": "temperature-by-sensor",
    "card_velocity": "transactions-by-card",
    "amount_spike": "transactions-by-card",
}


def late_events_label(name: str) -> str:
    """What the `x-error` of a late event of detection ``name`` says it was late for: a shipped
    detection's table, else ``detection <name>``."""
    return LATE_EVENTS_TABLE.get(name) or f"detection {name}"


def shipped_specs(settings: Settings, folder: Path = SHIPPED_DIR) -> list[Spec]:
    """The specs of ``settings.rules``, with the worker's thresholds and grace.

    Raises :class:`SettingsError` naming the variable when a setting makes a spec invalid (a
    grace of 0: a spec's grace is positive), or the folder when a file is missing or invalid.
    """
    specs = []
    for name in sorted(settings.rules):
        path = folder / f"{name}.yaml"
        try:
            shipped = load_file(path)
        except SpecInvalid as exc:
            raise SettingsError(
                f"{PREFIX}RULES: the shipped detection {name} cannot be read: {exc.errors[0]}"
            ) from None
        data: dict[str, Any] = shipped.data
        changes = [(data, "grace", settings.grace_seconds, "GRACE_SECONDS")]
        for spec_field, threshold, variable in THRESHOLD_SETTINGS[name]:
            changes.append((data["condition"], spec_field, getattr(settings.thresholds, threshold), variable))
        spec = shipped
        for where, spec_field, value, variable in changes:
            if where[spec_field] == value:
                continue  # the file's own (an applied file is then the same spec, with the same shape)
            where[spec_field] = value
            try:  # one setting at a time: a refusal names its variable
                spec = load_text(yaml.safe_dump(data), str(path))
            except SpecInvalid as exc:
                reason = "; ".join(error.reason for error in exc.errors)
                refused = f"the shipped detection {name} refuses it: {reason}"
                raise SettingsError(f"{PREFIX}{variable}={value:g} is invalid: {refused}") from None
        specs.append(spec)
    return specs
