"""Avro in the Confluent wire format: schemas, the codec, compatibility reasons, decoding by schema id."""

from streamapp.schema.avro.codec import (
    HEADER_BYTES,
    MAGIC_BYTE,
    decode_body,
    encode_record,
    jsonable,
    split_wire,
)
from streamapp.schema.avro.compatibility import explain_incompatibility
from streamapp.schema.avro.decoder import DEFAULT_MAX_CACHED, AvroDecoder, SchemaLookup, SubjectsOf
from streamapp.schema.avro.prescan import (
    DEFAULT_MAX_DECODED_BYTES,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_ITEMS,
    prescan,
)
from streamapp.schema.avro.schemas import (
    ParsedSchema,
    RegisteredSchema,
    bundled_schema,
    load_schema,
    parse_schema,
    schema_text,
)

__all__ = [
    "HEADER_BYTES",
    "MAGIC_BYTE",
    "DEFAULT_MAX_CACHED",
    "DEFAULT_MAX_DECODED_BYTES",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_ITEMS",
    "AvroDecoder",
    "ParsedSchema",
    "RegisteredSchema",
    "SchemaLookup",
    "SubjectsOf",
    "bundled_schema",
    "decode_body",
    "encode_record",
    "explain_incompatibility",
    "jsonable",
    "load_schema",
    "parse_schema",
    "prescan",
    "schema_text",
    "split_wire",
]
