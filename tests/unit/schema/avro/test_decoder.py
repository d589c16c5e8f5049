"""Decoding by schema id: writer schemas cached, unusable ids and corrupt or hostile bodies as reasons."""

from __future__ import annotations

import struct

import pytest

from streamapp.models import InvalidEvent
from streamapp.schema.avro.codec import encode_record
from streamapp.schema.avro.decoder import AvroDecoder
from streamapp.schema.avro.schemas import RegisteredSchema, bundled_schema, parse_schema, schema_text

V1 = bundled_schema("user-v1")
V2 = bundled_schema("user-v2")


class FakeRegistry:
    """Schema lookups by id, counted: what the decoder's cache should spare the registry."""

    def __init__(self, schemas: dict[int, RegisteredSchema]) -> None:
        self.schemas = schemas
        self.calls: list[int] = []

    async def __call__(self, schema_id: int) -> RegisteredSchema | None:
        self.calls.append(schema_id)
        return self.schemas.get(schema_id)


def _registry() -> FakeRegistry:
    return FakeRegistry(
        {
            1: RegisteredSchema(1, schema_text(V1)),
            2: RegisteredSchema(2, schema_text(V2)),
            3: RegisteredSchema(3, '{"type": "object"}', "JSON"),
            4: RegisteredSchema(4, '{"type": "nonsense"}'),
            5: RegisteredSchema(5, '"string"'),
        }
    )


async def test_decoder_reads_each_version_with_its_writer_schema_and_caches_it():
    registry = _registry()
    decoder = AvroDecoder(registry)
    v1 = encode_record(1, parse_schema(V1), {"name": "ann", "age": 31})
    v2 = encode_record(2, parse_schema(V2), {"name": "bob", "age": 40, "email": "bob@example.com"})
    for _ in range(3):
        assert await decoder.decode(v1) == {"schema_id": 1, "value": {"name": "ann", "age": 31}}
        assert await decoder.decode(v2) == {
            "schema_id": 2,
            "value": {"name": "bob", "age": 40, "email": "bob@example.com"},
        }
    assert registry.calls == [1, 2]  # one lookup per id, whatever the number of records
    assert decoder.cached_ids == [1, 2]


async def test_unknown_ids_are_dead_letter_reasons_and_are_not_asked_again_at_once():
    registry = _registry()
    decoder = AvroDecoder(registry, unknown_ttl=60)
    value = b"\x00\x00\x00\x03\xe7" + b"\x06ann\x3e"  # schema id 999
    for _ in range(5):
        with pytest.raises(InvalidEvent, match="unknown schema id 999"):
            await decoder.decode(value)
    assert registry.calls == [999]


@pytest.mark.parametrize(
    ("schema_id", "reason"),
    [(3, "is a JSON schema, not Avro"), (4, "schema id 4: not a valid Avro schema")],
)
async def test_unusable_registered_schemas_are_reasons(schema_id, reason):
    decoder = AvroDecoder(_registry())
    with pytest.raises(InvalidEvent, match=reason):
        await decoder.decode(struct.pack(">BI", 0, schema_id) + b"\x06ann\x3e")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "ends before the record does"),
        (b"\x06an", "ends before the record does"),
        (b"\x06ann\x3e\x00\x00", "2 bytes left after the record"),
        (b"\x04\xff\xfe\x3e", "corrupt Avro body"),  # not UTF-8 in a string
        (b"\x01", "corrupt Avro body"),  # negative string length
    ],
)
async def test_corrupt_bodies_are_reasons(body, reason):
    decoder = AvroDecoder(_registry())
    with pytest.raises(InvalidEvent, match=reason):
        await decoder.decode(b"\x00\x00\x00\x00\x01" + body)


async def test_a_bad_union_branch_is_a_reason():
    decoder = AvroDecoder(_registry())
    with pytest.raises(InvalidEvent, match="corrupt Avro body for schema id 2"):
        await decoder.decode(b"\x00\x00\x00\x00\x02\x06ann\x3e\x08")  # union index 4 of 2


# -- hostile bodies, ids of other subjects, bounded caches ---------------------------------------
def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


NULLS = RegisteredSchema(
    10,
    '{"type": "record", "name": "Bag", "fields": '
    '[{"name": "xs", "type": {"type": "array", "items": "null"}}]}',
)
MAP = RegisteredSchema(11, '{"type": "map", "values": {"type": "record", "name": "E", "fields": []}}')
TREE = RegisteredSchema(
    12,
    '{"type": "record", "name": "T", "fields": [{"name": "kids", "type": {"type": "array", "items": "T"}}]}',
)


def _hostile_registry() -> FakeRegistry:
    registry = _registry()
    registry.schemas.update({s.schema_id: s for s in (NULLS, MAP, TREE)})
    return registry


@pytest.mark.parametrize(
    ("schema_id", "body", "reason"),
    [
        # a billion nulls from six bytes: refused before one is built
        (
            10,
            _zigzag(10**9) + b"\x00",
            "arrays and maps claim 1000000000 or more items, over the limit of 10000",
        ),
        # the same claim spread over blocks, with a byte-size block header (negative count)
        (10, (_zigzag(-6000) + _zigzag(0)) * 2 + b"\x00", "claim 12000 or more items"),
        (10, _zigzag(2**62) + b"\x00", "claim 4611686018427387904 or more items"),
        # a map of empty records: one byte a key, nothing a value
        (11, _zigzag(20_000) + b"\x00" * 20_000 + b"\x00", "claim 20000 or more items"),
        # recursion: each level one item holding the next
        (12, _zigzag(1) * 200 + b"\x00", "nested deeper than 32"),
    ],
)
async def test_bodies_that_claim_more_than_the_bounds_are_refused_with_the_reason(schema_id, body, reason):
    decoder = AvroDecoder(_hostile_registry())
    with pytest.raises(InvalidEvent, match=reason):
        await decoder.decode(struct.pack(">BI", 0, schema_id) + body)


async def test_decoded_size_is_bounded_and_bodies_within_the_bounds_decode():
    decoder = AvroDecoder(_hostile_registry(), max_items=100_000, max_decoded_bytes=64 * 1024)
    with pytest.raises(InvalidEvent, match="decodes to more than 65536 bytes"):
        await decoder.decode(struct.pack(">BI", 0, 10) + _zigzag(50_000) + b"\x00")
    fine = await decoder.decode(struct.pack(">BI", 0, 10) + _zigzag(1000) + b"\x00")
    assert fine == {"schema_id": 10, "value": {"xs": [None] * 1000}}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_only_ids_registered_under_the_subject_are_accepted():
    registry = _registry()
    subjects = {1: {"users-value", "other-value"}, 2: {"other-value"}}
    asked: list[int] = []

    async def subjects_of(schema_id: int) -> frozenset[str]:
        asked.append(schema_id)
        return frozenset(subjects.get(schema_id, ()))

    clock = FakeClock()
    decoder = AvroDecoder(registry, subjects_of=subjects_of, subject="users-value", clock=clock)
    v1 = encode_record(1, parse_schema(V1), {"name": "a", "age": 1})
    assert decoder.needs_registry(v1)
    assert (await decoder.decode(v1))["schema_id"] == 1
    assert not decoder.needs_registry(v1)
    v2 = encode_record(2, parse_schema(V2), {"name": "b", "age": 2, "email": None})
    for _ in range(3):
        with pytest.raises(InvalidEvent, match="schema id 2 is not registered under subject users-value"):
            await decoder.decode(v2)
    assert registry.calls == [1, 2] and asked == [1, 2]  # the refusal is cached
    # a flood of made-up ids: one lookup each, refusals held within the bound
    for schema_id in range(1000, 1000 + 3 * decoder.max_cached):
        value = struct.pack(">BI", 0, schema_id) + b"\x06ann\x3e"
        with pytest.raises(InvalidEvent, match=f"unknown schema id {schema_id}"):
            await decoder.decode(value)
    assert len(decoder.refused_ids) == decoder.max_cached
    # registered under the subject later: accepted once the refusal expires
    subjects[2].add("users-value")
    clock.now += 31
    assert decoder.needs_registry(v2)
    assert (await decoder.decode(v2))["value"]["name"] == "b"
    assert decoder.cached_ids == [1, 2]


async def test_the_schema_cache_is_bounded():
    registry = FakeRegistry({n: RegisteredSchema(n, schema_text(V1)) for n in range(1, 8)})
    decoder = AvroDecoder(registry, max_cached=3)
    for schema_id in range(1, 8):
        await decoder.decode(encode_record(schema_id, parse_schema(V1), {"name": "a", "age": 1}))
    assert decoder.cached_ids == [5, 6, 7]


def test_needs_registry_is_false_for_what_the_caches_answer():
    decoder = AvroDecoder(_registry())
    assert not decoder.needs_registry(None)
    assert not decoder.needs_registry(b'{"name": "x"}')  # not framed: a dead letter without a lookup
    assert decoder.needs_registry(b"\x00\x00\x00\x00\x01\x06ann\x3e")
