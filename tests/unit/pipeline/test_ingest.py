"""The ingest step with fakes: valid events forwarded as envelopes, bad records to dead-letters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord

from streamapp.models import Login, StockPrice, decode_envelope, parse_login, parse_stock_price
from streamapp.pipeline.ingest import ENVELOPE_OVERHEAD_BYTES, Ingest, to_specs_only
from streamapp.runtime.producer import Delivery, key_partition
from streamapp.runtime.router import Router
from streamapp.runtime.topics import prices_by_symbol_topic
from streamapp.types import Rekey
from tests.unit.fakes import NOW, SinkLog, record

BY_SYMBOL = prices_by_symbol_topic.get_topic_name()


def _by_symbol(tick: StockPrice) -> list[tuple[Any, str]]:
    return [(prices_by_symbol_topic, tick.symbol)]


def _tick(symbol: str = "ACME", price: float = 12.5, **extra: object) -> bytes:
    return orjson.dumps({"ts": NOW - 5, "symbol": symbol, "price": price, **extra})


def _login(user: str = "ann", success: bool | str = False, ip: str = "10.0.0.1") -> bytes:
    return orjson.dumps({"ts": NOW - 5, "ip": ip, "user": user, "success": success})


def _ingest(
    router: Router | None = None,
    partitions: int = 4,
    max_bytes: int = 10_000,
    source: str = "stock-prices",
    rekey: Rekey = _by_symbol,
) -> tuple[Ingest, SinkLog]:
    out = SinkLog(partitions)
    parse = parse_stock_price if source == "stock-prices" else parse_login
    ingest = Ingest(
        source=source, parse=parse, rekey=rekey, router=router or Router(), new_sink=out,
        dead_letters_topic="dead-letters", max_record_bytes=max_bytes,
    )  # fmt: skip
    return ingest, out


async def test_a_price_is_forwarded_by_symbol_as_an_envelope_of_a_typed_price() -> None:
    ingest, out = _ingest()
    value = _tick()
    await ingest([record("stock-prices", value, partition=2, offset=41)])
    [by_symbol] = out.sent
    assert (by_symbol.topic, by_symbol.key) == (BY_SYMBOL, b"ACME")
    envelope = decode_envelope(by_symbol.value, "stock-prices", parse_stock_price)
    assert (envelope.partition, envelope.offset) == (2, 41)
    assert envelope.event == StockPrice(ts=NOW - 5, symbol="ACME", price=12.5)
    assert envelope.raw is not None and envelope.raw.encode() == value  # late-events keep it byte for byte


class _Handoff:
    """The detections of a topic (agents.run_detections.handoff), keeping what they are handed."""

    def __init__(self) -> None:
        self.events: list[tuple[ConsumerRecord, Any]] = []

    async def wanted(self, topic: str) -> bool:
        return True

    async def __call__(self, events: Sequence[tuple[ConsumerRecord, Any]]) -> list[Delivery]:
        self.events.extend(events)
        return []


async def test_logins_take_no_hop_and_go_to_the_detections_of_logins_alone() -> None:
    ingest, out = _ingest(source="logins", rekey=to_specs_only)
    ingest.detections = handoff = _Handoff()
    await ingest([record("logins", _login(success=True)), record("logins", _login(), offset=1)])
    assert out.sent == []
    assert [(r.offset, event) for r, event in handoff.events] == [
        (0, Login(ts=NOW - 5, ip="10.0.0.1", user="ann", success=True)),
        (1, Login(ts=NOW - 5, ip="10.0.0.1", user="ann", success=False)),
    ]


async def test_bad_records_go_to_dead_letters_with_the_reason_and_their_origin() -> None:
    ingest, out = _ingest(max_bytes=200, source="logins", rekey=to_specs_only)
    ingest.detections = handoff = _Handoff()
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
    assert handoff.events == []  # no detection sees them


async def test_a_large_input_goes_without_its_raw_copy() -> None:
    ingest, out = _ingest(max_bytes=10**6)
    value = _tick(note='"' * (ENVELOPE_OVERHEAD_BYTES * 2))  # escaped, its copy doubles
    await ingest([record("stock-prices", value)])
    envelope = decode_envelope(out.sent[0].value, "stock-prices", parse_stock_price)
    assert envelope.raw is None and envelope.event.symbol == "ACME"


class _Handler:
    def __init__(self) -> None:
        self.batches: list[list[ConsumerRecord]] = []

    async def __call__(self, records: Sequence[ConsumerRecord]) -> list[Delivery]:
        self.batches.append(list(records))
        return []


async def test_a_copartitioned_event_goes_straight_to_its_detector_through_the_router() -> None:
    detector = _Handler()
    router = Router()
    router.declare(BY_SYMBOL, detector, "analyze-prices")
    ingest, out = _ingest(router=router)
    symbols = [f"SYM{n}" for n in range(12)]
    home = {symbol: key_partition(symbol.encode(), 4) for symbol in symbols}
    await ingest(
        [record("stock-prices", _tick(symbol), partition=0, offset=n) for n, symbol in enumerate(symbols)]
    )
    direct = [r.key.decode() for batch in detector.batches for r in batch]
    assert direct == [symbol for symbol in symbols if home[symbol] == 0] and direct
    assert [sent.key.decode() for sent in out.sent] == [symbol for symbol in symbols if home[symbol] != 0]
    assert all(r.offset == -1 and r.topic == BY_SYMBOL and r.partition == 0 for r in detector.batches[0])
    envelope = decode_envelope(detector.batches[0][0].value, "stock-prices", parse_stock_price)
    assert envelope.event.symbol == direct[0]


async def test_a_by_entity_topic_with_another_partition_count_is_never_handed_over_directly() -> None:
    detector = _Handler()
    router = Router()
    router.declare(BY_SYMBOL, detector, "analyze-prices")
    ingest, out = _ingest(router=router)
    out.counts[BY_SYMBOL] = 8
    await ingest([record("stock-prices", _tick(f"SYM{n}"), offset=n) for n in range(12)])
    assert detector.batches == [] and len(out.sent) == 12
