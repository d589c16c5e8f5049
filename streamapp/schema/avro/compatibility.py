"""Plain reasons why a new record schema cannot follow an old one under a compatibility level."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["explain_incompatibility"]

_PROMOTIONS = {
    ("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"), ("long", "double"),
    ("float", "double"), ("string", "bytes"), ("bytes", "string"),
}  # fmt: skip


def _type_name(avro_type: Any) -> str:
    if isinstance(avro_type, list):
        return "union[" + ", ".join(_type_name(t) for t in avro_type) + "]"
    if isinstance(avro_type, dict):
        return str(avro_type.get("name") or avro_type.get("type"))
    return str(avro_type)


def _readable(writer: Any, reader: Any) -> bool:
    """Whether data of ``writer`` type can be read as ``reader`` (top-level shapes only)."""
    if writer == reader:
        return True
    if isinstance(reader, list):
        return any(_readable(writer, branch) for branch in reader)
    if isinstance(writer, list):
        return all(_readable(branch, reader) for branch in writer)
    if isinstance(writer, str) and isinstance(reader, str):
        return (writer, reader) in _PROMOTIONS
    return _type_name(writer) == _type_name(reader)  # nested named types: leave the details to the registry


def _field_problems(reader: dict[str, Any], writer: dict[str, Any], writer_role: str) -> list[str]:
    written = {f["name"]: f for f in writer.get("fields", [])}
    for field_ in writer.get("fields", []):
        for alias in field_.get("aliases", []):
            written.setdefault(alias, field_)
    problems = []
    for field_ in reader.get("fields", []):
        name = field_["name"]
        source = next((written[n] for n in [name, *field_.get("aliases", [])] if n in written), None)
        if source is None:
            if "default" not in field_:
                problems.append(
                    f"field {name!r} has no default, and records written with the {writer_role} "
                    "schema lack it"
                )
        elif not _readable(source["type"], field_["type"]):
            problems.append(
                f"field {name!r} is {_type_name(source['type'])} in the {writer_role} schema and "
                f"{_type_name(field_['type'])} in the {'newer' if writer_role == 'older' else 'older'} one: "
                "not convertible"
            )
    return problems


def explain_incompatibility(new: Any, old: Any, level: str | None) -> list[str]:
    """Plain reasons why record schema ``new`` cannot follow ``old`` under ``level`` (may be empty)."""
    try:
        new_value = json.loads(new) if isinstance(new, str) else new
        old_value = json.loads(old) if isinstance(old, str) else old
    except ValueError:
        return []
    if not (isinstance(new_value, dict) and isinstance(old_value, dict)):
        return []
    if new_value.get("type") != "record" or old_value.get("type") != "record":
        return []
    level = (level or "BACKWARD").upper()
    problems = []
    if level.startswith(("BACKWARD", "FULL")):  # the new schema must read old data
        problems += _field_problems(new_value, old_value, "older")
    if level.startswith(("FORWARD", "FULL")):  # the old schema must read new data
        problems += _field_problems(old_value, new_value, "newer")
    return problems
