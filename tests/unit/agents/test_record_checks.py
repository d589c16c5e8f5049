"""What a detector reads back: an envelope handed over in process is kept, one read back is parsed again."""

from __future__ import annotations

from agents.record_checks import envelope_problem
from streamapp.models import Login, encode_envelope, parse_login
from streamapp.types import Envelope, ForwardedRecord
from tests.unit.fakes import NOW, record


def test_a_record_handed_over_in_process_carries_its_envelope_and_one_read_back_is_parsed_again() -> None:
    login = Login(ts=NOW, user="alice", ip="10.0.0.1", success=False)
    envelope = Envelope("logins", 0, 7, login, None)
    forwarded = ForwardedRecord(
        "x-failed-logins-by-ip", 0, -1, 0, 0, b"10.0.0.1", encode_envelope(envelope), None, 8, 1, (),
        envelope=envelope,
    )  # fmt: skip
    carried, problem = envelope_problem(forwarded, parse_login, "logins")
    assert carried is envelope and problem is None  # the same object: not decoded again
    # the same bytes read back from the topic: decoded and parsed, an equal envelope
    read_back = record("x-failed-logins-by-ip", encode_envelope(envelope), key=b"10.0.0.1")
    decoded, problem = envelope_problem(read_back, parse_login, "logins")
    assert problem is None and decoded is not None and decoded.event == login
    # a forged one on the topic (a time far in the future) is refused by the parser
    forged = Envelope("logins", 0, 8, Login(ts=NOW + 10**9, user="a", ip="10.0.0.1", success=False))
    _, problem = envelope_problem(
        record("x", encode_envelope(forged), key=b"10.0.0.1"), parse_login, "logins"
    )
    assert problem is not None
