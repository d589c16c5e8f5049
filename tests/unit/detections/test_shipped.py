"""The shipped specs a worker runs (STREAMAPP_RULES), with its thresholds and grace."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streamapp.detections.control import Registry
from streamapp.detections.shipped import (
    LATE_EVENTS_TABLE,
    SHIPPED_DIR,
    THRESHOLD_SETTINGS,
    late_events_label,
    shipped_specs,
)
from streamapp.detections.spec import load_file
from streamapp.detections.testing import run
from streamapp.settings import SettingsError, load_settings


def test_a_worker_runs_exactly_the_rules_as_specs() -> None:
    assert len(shipped_specs(load_settings({}))) == 6  # the default: all six rules
    settings = load_settings({"STREAMAPP_RULES": "brute_force,amount_spike"})
    assert [spec.name for spec in shipped_specs(settings)] == ["amount_spike", "brute_force"]
    assert shipped_specs(load_settings({"STREAMAPP_RULES": "none"})) == []


def test_the_removed_hand_written_engine_is_refused_at_start_naming_the_variable() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings({"STREAMAPP_RULE_ENGINE": "hand-written"})
    assert str(refused.value).startswith(
        "STREAMAPP_RULE_ENGINE='hand-written' is invalid: hand-written was removed"
    )
    assert "\n" not in str(refused.value)  # one line
    with pytest.raises(SettingsError, match="STREAMAPP_RULE_ENGINE='rules' is invalid: must be specs"):
        load_settings({"STREAMAPP_RULE_ENGINE": "rules"})
    assert len(shipped_specs(load_settings({"STREAMAPP_RULE_ENGINE": "specs"}))) == 6


def test_with_default_settings_the_specs_are_the_files() -> None:
    specs = shipped_specs(load_settings({}))
    assert len(specs) == 6
    for spec in specs:
        assert spec.to_json() == load_file(SHIPPED_DIR / f"{spec.name}.yaml").to_json()


def test_threshold_variables_and_the_grace_set_the_specs() -> None:
    settings = load_settings(
        {
            "STREAMAPP_BRUTE_FORCE_THRESHOLD": "2",
            "STREAMAPP_ACCOUNT_TAKEOVER_THRESHOLD": "4",
            "STREAMAPP_AMOUNT_SPIKE_FACTOR": "3.5",
            "STREAMAPP_AMOUNT_SPIKE_MIN_TRANSACTIONS": "2",
            "STREAMAPP_GRACE_SECONDS": "20",
        }
    )
    specs = {spec.name: spec for spec in shipped_specs(settings)}
    assert specs["brute_force"].data["condition"]["value"] == 2
    assert specs["account_takeover"].data["condition"]["count"] == 4
    assert (
        specs["amount_spike"].data["condition"] | {"value": 3.5, "min_samples": 2}
        == specs["amount_spike"].data["condition"]
    )
    assert {spec.grace for spec in specs.values()} == {20}
    # and they run so: three failures from one IP alert at a threshold of 2
    ts = 1_700_000_000.0
    logins = [{"ts": ts + i, "ip": "10.0.0.1", "user": "ann", "success": False} for i in range(3)]
    alerts = run(specs["brute_force"], logins).alerts
    assert [(a.kind, a.key, a.value, a.threshold) for a in alerts] == [("brute_force", "10.0.0.1", 3, 2)]


def test_a_setting_the_specs_refuse_stops_the_worker_naming_the_variable(tmp_path: Path) -> None:
    env = {"STREAMAPP_RULES": "high_temperature"}
    settings = load_settings(env)
    refused = "STREAMAPP_GRACE_SECONDS=0 is invalid: the shipped detection high_temperature refuses it"
    with pytest.raises(SettingsError, match=refused):
        shipped_specs(load_settings({**env, "STREAMAPP_GRACE_SECONDS": "0"}))
    with pytest.raises(SettingsError, match="shipped detection high_temperature cannot be read"):
        shipped_specs(settings, folder=tmp_path)


def test_the_control_topic_replaces_or_disables_a_shipped_detection() -> None:
    registry = Registry()
    specs = shipped_specs(load_settings({}))
    registry.install(specs)
    assert sorted(registry.engines) == sorted(spec.name for spec in specs)
    changed = {**specs[0].data, "version": 2}
    changed["condition"] = {**changed["condition"]}
    assert registry.apply_record(specs[0].name.encode(), orjson.dumps(changed), "test") is None
    assert registry.engines[specs[0].name].spec.version == 2
    assert registry.apply_record(specs[1].name.encode(), None, "test") is None
    assert specs[1].name not in registry.engines and len(registry.engines) == 5


def test_a_shipped_detections_late_events_name_its_table_as_the_contract_says() -> None:
    assert late_events_label("brute_force") == "failed-logins-by-ip"
    assert late_events_label("high_temperature") == late_events_label("temperature_anomaly")
    assert late_events_label("port_scan") == "detection port_scan"
    assert set(LATE_EVENTS_TABLE) == set(THRESHOLD_SETTINGS)  # every shipped rule
