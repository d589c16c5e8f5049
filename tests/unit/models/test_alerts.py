"""Alert ids: the same rule firing on the same input always gives the same id."""

from __future__ import annotations

import orjson

from streamapp.models.alerts import alert_id_for


def test_alert_ids_are_deterministic():
    a = alert_id_for("brute_force", "1.2.3.4", 0.0, 60.0)
    assert a == alert_id_for("brute_force", "1.2.3.4", 0.0, 60.0)
    assert a != alert_id_for("brute_force", "1.2.3.4", 10.0, 70.0)
    assert a != alert_id_for("card_velocity", "1.2.3.4", 0.0, 60.0)
    assert orjson.dumps(a)
