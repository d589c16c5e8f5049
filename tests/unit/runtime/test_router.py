"""The app's router: routes declared once, by the assembly function, looked up by topic name."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from aiokafka.structs import ConsumerRecord

from streamapp.app import app, settings
from streamapp.runtime.producer import Delivery
from streamapp.runtime.router import Router
from tests.unit.fakes import record


def _handler(name: str, calls: list[str]) -> object:
    async def handler(records: Sequence[ConsumerRecord]) -> list[Delivery]:
        calls.append(f"{name}:{len(records)}")
        return []

    return handler


async def test_routes_are_declared_at_the_first_look_up_and_a_second_handler_gets_every_batch_too() -> None:
    calls: list[str] = []
    assembled: list[Router] = []

    def assemble(router: Router) -> None:
        assembled.append(router)
        router.declare("sensor-readings", _handler("ingest", calls), "route-sensor-readings")  # type: ignore[arg-type]
        router.declare("sensor-readings", _handler("detections", calls), "route-detections")  # type: ignore[arg-type]

    router = Router(assemble)
    assert assembled == []
    assert "sensor-readings" in router and "logins" not in router
    await router.handle("sensor-readings", [record("sensor-readings", b"{}")])
    assert calls == ["ingest:1", "detections:1"] and len(assembled) == 1
    # what reaches one agent's stream (faust gives it to every agent of the topic): its handler alone
    calls.clear()
    await router.handle_for_agent("route-detections", "sensor-readings", [record("sensor-readings", b"{}")])
    assert calls == ["detections:1"]
    with pytest.raises(LookupError, match="'route-logins'"):
        await router.handle_for_agent("route-logins", "sensor-readings", [])


async def test_a_topic_without_a_route_is_an_error_naming_it() -> None:
    with pytest.raises(LookupError, match="'nowhere'"):
        await Router().handle("nowhere", [])


def test_the_app_routes_every_input_and_by_entity_topic() -> None:
    router = Router(lambda r: None)
    from streamapp.app import declare_routes

    declare_routes(router, app, settings)
    names = {
        settings.topic(name)
        for name in ("logins", "sensor-readings", "transactions", "stock-prices", "users")
    }
    by_entity = {f"{settings.app_id}-{name}" for name in ("prices-by-symbol", "detection-events")}
    assert names | by_entity <= set(router.handlers)
    # the detections' events are keyed by detection and entity in one topic: no topic per rule
    assert not {
        name for name in router.handlers if name.endswith(("-by-ip", "-by-user", "-by-card", "-by-sensor"))
    }
    assert app.batch_router is not router  # the app's own router is untouched by this
