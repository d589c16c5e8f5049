"""Reasons in plain words why a new record schema cannot follow an old one."""

from __future__ import annotations

from streamapp.schema.avro.compatibility import explain_incompatibility
from streamapp.schema.avro.schemas import bundled_schema

V1 = bundled_schema("user-v1")
V2 = bundled_schema("user-v2")


def test_incompatibility_reasons_in_plain_words():
    age_string = bundled_schema("user-incompatible-age-string")
    no_default = bundled_schema("user-incompatible-no-default")
    assert explain_incompatibility(V2, V1, "BACKWARD") == []
    assert explain_incompatibility(age_string, V1, "BACKWARD") == [
        "field 'age' is int in the older schema and string in the newer one: not convertible"
    ]
    assert explain_incompatibility(no_default, V1, "BACKWARD") == [
        "field 'country' has no default, and records written with the older schema lack it"
    ]
    # FORWARD: the old schema reads new data; a removed field without default breaks it
    assert explain_incompatibility(V1, no_default, "FORWARD") == [
        "field 'country' has no default, and records written with the newer schema lack it"
    ]
    assert explain_incompatibility('"string"', V1, "BACKWARD") == []
