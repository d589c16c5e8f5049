"""Dead letters as `streamapp dlq` shows them: reason, origin, previews, headers kept for re-submission."""

from __future__ import annotations

from streamapp.ops.dlq import DeadLetter


def _letter(headers: list[tuple[str, bytes]], value: bytes | None = b'{"a": 1}') -> DeadLetter:
    return DeadLetter(
        partition=3, offset=17, timestamp_ms=1_767_225_600_000, key=b"k1", value=value, headers=tuple(headers)
    )


def test_reason_origin_and_position():
    letter = _letter(
        [
            ("trace", b"abc"),
            ("x-error", b"malformed JSON: unexpected end"),
            ("x-source-topic", b"logins"),
            ("x-source-partition", b"2"),
            ("x-source-offset", b"99"),
        ]
    )
    assert letter.position == "3:17"
    assert letter.error == "malformed JSON: unexpected end"
    assert letter.source == "logins[2]@99"
    assert letter.original_headers() == [("trace", b"abc")]
    assert letter.summary() == {
        "position": "3:17",
        "time": "2026-01-01T00:00:00+00:00",
        "source": "logins[2]@99",
        "error": "malformed JSON: unexpected end",
        "key": "'k1'",
        "value_bytes": 8,
        "value": "'{\"a\": 1}'",
    }


def test_after_a_resubmission_the_newest_reason_wins_and_old_marks_are_dropped():
    letter = _letter(
        [
            ("x-error", b"old reason"),
            ("x-source-topic", b"users"),
            ("x-resubmitted-from", b"dead-letters:0:1"),
            ("x-error", b"new reason"),
        ]
    )
    assert letter.error == "new reason"
    assert letter.original_headers() == []


def test_previews_of_binary_null_and_long_values():
    assert "value=null null" in _letter([], value=None).describe()
    assert "b'\\x00\\xff'" in _letter([], value=b"\x00\xff").describe()
    assert "(no x-error header)" in _letter([]).describe()
    long = _letter([], value=b"x" * 100).summary()["value"]
    assert long.endswith("...") and long.count("x") == 80
