"""The ingest step with fakes: valid events forwarded as envelopes, bad records to dead-letters."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from agents.route_logins import login_targets
from agents.route_sensor_readings import reading_targets
from agents.route_transactions import transaction_targets
from streamapp.models import Login, decode_envelope, parse_login
from streamapp.pipeline.ingest import ENVELOPE_OVERHEAD_BYTES, Ingest
from streamapp.runtime.producer import Delivery, key_partition
from streamapp.runtime.router import Router
from streamapp.runtime.topics import failed_logins_by_ip_topic, logins_by_user_topic
from tests.unit.fakes import NOW, SinkLog, record

BY_IP = failed_logins_by_ip_topic.get_topic_name()
BY_USER = logins_by_user_topic.get_topic_name()
ALL_RULES = frozenset({"brute_force", "account_takeover"})


def _login(user: str = "ann", success: bool = False, ip: str = "10.0.0.1", **extra: object) -> bytes:
    return orjson.dumps({"ts": NOW - 5, "ip": ip, "user": user, "success": success, **extra})


def _ingest(
    router: Router | None = None,
    rules: frozenset[str] = ALL_RULES,
    partitions: int = 4,
    max_bytes: int = 10_000,
) -> tuple[Ingest, SinkLog]:
    out = SinkLog(partitions)
    ingest = Ingest(
        source="logins", parse=parse_login, rekey=login_targets(rules), router=router or Router(),
        new_sink=out, dead_letters_topic="dead-letters", max_record_bytes=max_bytes,
    )  # fmt: skip
    return ingest, out


async def test_a_failed_login_is_forwarded_by_ip_and_by_user_as_an_envelope_of_a_typed_login() -> None:
    ingest, out = _ingest()
    value = _login()
    await ingest([record("logins", value, partition=2, offset=41)])
    assert [sent.topic for sent in out.sent] == [BY_IP, BY_USER]
    by_ip, by_user = out.sent
    assert (by_ip.key, by_user.key) == (b"10.0.0.1", b"ann")
    assert by_ip.value == by_user.value  # one envelope, encoded once
    envelope = decode_envelope(by_ip.value, "logins", parse_login)
    assert (envelope.partition, envelope.offset) == (2, 41)
    assert envelope.event == Login(ts=NOW - 5, ip="10.0.0.1", user="ann", success=False)
    assert envelope.raw is not None and envelope.raw.encode() == value  # late-events keep it byte for byte


async def test_rules_left_out_take_no_hop() -> None:
    ingest, out = _ingest(rules=frozenset({"brute_force"}))
    await ingest([record("logins", _login(success=True)), record("logins", _login(success=False), offset=1)])
    assert [sent.topic for sent in out.sent] == [BY_IP]


@pytest.mark.parametrize(
    ("targets", "rules", "hops"),
    [
        (transaction_targets, {"card_velocity"}, 1),
        (transaction_targets, {"amount_spike", "brute_force"}, 1),
        (transaction_targets, {"brute_force", "high_temperature", "temperature_anomaly"}, 0),
        (reading_targets, {"temperature_anomaly"}, 1),
        (reading_targets, {"card_velocity", "amount_spike", "account_takeover"}, 0),
        (reading_targets, set(), 0),
    ],
)
def test_transactions_and_readings_take_their_hop_only_for_their_rules(targets, rules, hops) -> None:
    # (the specs of those names keep the views then: streamapp.detections.operators.spec_kept)
    event = SimpleNamespace(card_id="c1", sensor_id="s1")
    assert len(list(targets(frozenset(rules))(event))) == hops


async def test_bad_records_go_to_dead_letters_with_the_reason_and_their_origin() -> None:
    ingest, out = _ingest(max_bytes=200)
    bad = [b"not json", b"[1]", _login(success="yes"), None, _login(user="x" * 300)]
    await ingest([record("logins", value, partition=1, offset=n) for n, value in enumerate(bad)])
    assert [sent.topic for sent in out.sent] == ["dead-letters"] * len(bad)
    reasons = [(sent.header("x-error") or b"").decode() for sent in out.sent]
    assert reasons[0].startswith("malformed JSON")
    assert reasons[1] == "value must be a JSON object, got list"
    assert "'success'" in reasons[2]
    assert reasons[3] == "empty record value (null)"
    assert reasons[4] == f"record of {len(bad[4] or b'')} bytes exceeds STREAMAPP_MAX_RECORD_BYTES=200"
    assert [sent.value for sent in out.sent] == bad  # byte for byte
    assert [sent.header("x-source-offset") for sent in out.sent] == [str(n).encode() for n in range(len(bad))]
    assert {sent.header("x-source-topic") for sent in out.sent} == {b"logins"}


async def test_a_large_input_goes_without_its_raw_copy() -> None:
    ingest, out = _ingest(rules=frozenset({"account_takeover"}), max_bytes=10**6)
    value = _login(note='"' * (ENVELOPE_OVERHEAD_BYTES * 2))  # escaped, its copy doubles
    await ingest([record("logins", value)])
    envelope = decode_envelope(out.sent[0].value, "logins", parse_login)
    assert envelope.raw is None and envelope.event.user == "ann"


class _Handler:
    def __init__(self) -> None:
        self.batches: list[list[ConsumerRecord]] = []

    async def __call__(self, records: Sequence[ConsumerRecord]) -> list[Delivery]:
        self.batches.append(list(records))
        return []


async def test_a_copartitioned_event_goes_straight_to_its_detector_through_the_router() -> None:
    detector = _Handler()
    router = Router()
    router.declare(BY_USER, detector, "detect-account-takeover")
    ingest, out = _ingest(router=router, rules=frozenset({"account_takeover"}))
    users = [f"user{n}" for n in range(12)]
    home = {user: key_partition(user.encode(), 4) for user in users}
    await ingest([record("logins", _login(user=user), partition=0, offset=n) for n, user in enumerate(users)])
    direct = [r.key.decode() for batch in detector.batches for r in batch]
    assert direct == [user for user in users if home[user] == 0] and direct
    assert [sent.key.decode() for sent in out.sent] == [user for user in users if home[user] != 0]
    assert all(r.offset == -1 and r.topic == BY_USER and r.partition == 0 for r in detector.batches[0])
    envelope = decode_envelope(detector.batches[0][0].value, "logins", parse_login)
    assert envelope.event.user == direct[0]


async def test_a_by_entity_topic_with_another_partition_count_is_never_handed_over_directly() -> None:
    detector = _Handler()
    router = Router()
    router.declare(BY_USER, detector, "detect-account-takeover")
    ingest, out = _ingest(router=router, rules=frozenset({"account_takeover"}))
    out.counts[BY_USER] = 8
    await ingest([record("logins", _login(user=f"user{n}"), offset=n) for n in range(12)])
    assert detector.batches == [] and len(out.sent) == 12
