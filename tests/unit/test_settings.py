"""Settings: defaults of the contract, and bad values refused with the variable named."""

from __future__ import annotations

import pytest

from streamapp.settings import SettingsError, load_settings


def test_defaults_follow_the_contract():
    settings = load_settings({})
    assert settings.bootstrap_servers == ["127.0.0.1:9092"]
    assert settings.web_port == 6066
    assert settings.partitions == 8
    assert settings.processing_guarantee == "at_least_once"
    assert settings.thresholds.brute_force_failures == 5
    assert settings.topic("logins") == "logins"


def test_broker_list_in_faust_url_form():
    settings = load_settings({"STREAMAPP_BROKER": "kafka://h1:9092;h2:9093"})
    assert settings.bootstrap_servers == ["h1:9092", "h2:9093"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STREAMAPP_WEB_PORT", "abc"),
        ("STREAMAPP_WEB_PORT", "70000"),
        ("STREAMAPP_PARTITIONS", "0"),
        ("STREAMAPP_PROCESSING_GUARANTEE", "twice"),
        ("STREAMAPP_BROKER", "http://localhost:9092"),
        ("STREAMAPP_BROKER", "kafka://nohostport"),
        ("STREAMAPP_SECURITY_PROTOCOL", "TLS"),
        ("STREAMAPP_SSL_CAFILE", "/no/such/ca.pem"),
        ("STREAMAPP_BRUTE_FORCE_THRESHOLD", "-1"),
        ("STREAMAPP_AMOUNT_SPIKE_FACTOR", "nan"),
        ("STREAMAPP_SCHEMA_REGISTRY_URL", "registry:8080"),
        ("STREAMAPP_TOPIC_PREFIX", "bad prefix"),
        ("STREAMAPP_RETENTION_SECONDS", "60"),
        ("STREAMAPP_RULES", "brute_force,bruteforce"),
        ("STREAMAPP_RULES", ","),
    ],
)
def test_bad_value_is_refused_naming_the_variable(name, value):
    with pytest.raises(SettingsError) as info:
        load_settings({name: value})
    assert name in str(info.value)


def test_rules_default_to_every_rule_of_the_contract():
    every = {"brute_force", "account_takeover", "high_temperature", "temperature_anomaly",
             "card_velocity", "amount_spike"}  # fmt: skip
    assert load_settings({}).rules == every
    assert load_settings({"STREAMAPP_RULES": "all"}).rules == every
    assert load_settings({"STREAMAPP_RULES": " brute_force, card_velocity "}).rules == {
        "brute_force",
        "card_velocity",
    }
    # none: every detection from specs
    assert load_settings({"STREAMAPP_RULES": "None"}).rules == frozenset()


def test_unknown_rule_is_named_with_the_valid_ones():
    with pytest.raises(SettingsError) as info:
        load_settings({"STREAMAPP_RULES": "brute_force,bruteforce"})
    assert "'bruteforce'" in str(info.value)
    assert "account_takeover" in str(info.value)


def test_sasl_ssl_needs_credentials():
    with pytest.raises(SettingsError, match="STREAMAPP_SASL_MECHANISM"):
        load_settings({"STREAMAPP_SECURITY_PROTOCOL": "SASL_SSL"})


def test_secrets_do_not_show_in_repr():
    settings = load_settings(
        {"STREAMAPP_WEB_TOKEN": "s3cret-token-0123456789", "STREAMAPP_SASL_PASSWORD": "pw123456"}
    )
    assert "s3cret-token-0123456789" not in repr(settings)
    assert "pw123456" not in repr(settings)


def test_worker_command_refuses_bad_setting_at_start():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "streamapp.cli", "worker"],
        env={"STREAMAPP_WEB_PORT": "not-a-port", "PATH": ""},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "STREAMAPP_WEB_PORT" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["STREAMAPP_WEB_TOKEN", "STREAMAPP_PEER_SECRET"])
@pytest.mark.parametrize("value", ["", "   ", "short-secret"])
def test_blank_or_short_secrets_are_refused_without_echoing_them(name, value):
    with pytest.raises(SettingsError, match=name) as refused:
        load_settings({name: value})
    assert "at least 16 characters" in str(refused.value)
    if value.strip():
        assert value not in str(refused.value)


def test_a_long_enough_token_and_peer_secret_are_kept():
    settings = load_settings({"STREAMAPP_WEB_TOKEN": "t" * 16, "STREAMAPP_PEER_SECRET": "p" * 40})
    assert (settings.web_token, settings.peer_secret) == ("t" * 16, "p" * 40)
    assert load_settings({}).web_token is None and load_settings({}).peer_secret is None


def test_stall_seconds_default_and_bounds():
    assert load_settings({}).stall_seconds == 120
    assert load_settings({"STREAMAPP_STALL_SECONDS": "30"}).stall_seconds == 30
    for bad in ("0", "-5", "abc", "9", "nan", "inf"):
        with pytest.raises(SettingsError, match="STREAMAPP_STALL_SECONDS"):
            load_settings({"STREAMAPP_STALL_SECONDS": bad})


@pytest.mark.parametrize("value", ["-1", "abc", "inf", "1801"])
def test_grace_must_be_a_non_negative_number_within_half_the_retention(value):
    with pytest.raises(SettingsError, match="STREAMAPP_GRACE_SECONDS"):
        load_settings({"STREAMAPP_GRACE_SECONDS": value})


def test_grace_defaults_to_a_minute_and_may_be_zero():
    assert load_settings({}).grace_seconds == 60
    assert load_settings({"STREAMAPP_GRACE_SECONDS": "0"}).grace_seconds == 0
