"""HeldKeys: which keys hold events for the held rules, and when a quiet key is due for a tick."""

from __future__ import annotations

from agents.held_keys import HeldKeys


def test_a_key_is_due_after_the_grace_and_again_only_after_another():
    held = HeldKeys()
    held.update(3, b"card-1", {"pending": [[100.0, "t1", 5.0]]}, now=1000.0)
    held.update(3, b"card-1", {"pending": [[100.0, "t1", 5.0], [101.0, "t2", 5.0]]}, now=1010.0)
    assert held.due(1050.0, grace=60) == []  # held since 1000, not since its latest event
    assert held.due(1060.0, grace=60) == [(3, b"card-1")]
    assert held.due(1061.0, grace=60) == []
    assert held.due(1120.0, grace=60) == [(3, b"card-1")]


def test_a_key_with_nothing_held_is_forgotten():
    held = HeldKeys()
    held.update(0, b"s", {"pending": [[1.0, 20.0]]}, now=0.0)
    held.update(0, b"s", {"pending": []}, now=1.0)
    assert len(held) == 0 and held.due(1000.0, grace=60) == []
