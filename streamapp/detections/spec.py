"""Detection specs: YAML files checked against docs/detection.schema.json, errors with file and line."""

from __future__ import annotations

import hashlib
import json
import math
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import yaml

from streamapp.models import INPUTS

__all__ = [
    "OPERATOR_NAMES",
    "SCHEMA_PATH",
    "Spec",
    "SpecError",
    "SpecInvalid",
    "TEMPLATE_NAMES",
    "field_kinds",
    "load_file",
    "load_text",
    "operator_of",
    "schema",
    "template_fields",
    "spec_from_json",
]

#: the published schema (editors complete and check specs with it)
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "detection.schema.json"
#: names every alert template may use besides the source's fields
TEMPLATE_NAMES = frozenset(
    {"name", "key", "value", "threshold", "ts", "window_start", "window_end", "severity"}
)
#: a spec file larger than this is refused before parsing (a control record too)
MAX_SPEC_BYTES = 64 * 1024
DEFAULT_GRACE = 60.0
#: the shipped rules' semantics a spec can ask for (streamapp.detections.operators), with the
#: names their alert texts may use besides TEMPLATE_NAMES and the fields
OPERATOR_NAMES: dict[str, frozenset[str]] = {
    "stepped_count": frozenset(),
    "eager_sequence": frozenset(),
    "eager_max": frozenset(),
    "windowed_zscore": frozenset({"mean", "count", "sigmas"}),
    "keyed_ratio": frozenset({"mean", "count", "ratio"}),
}
#: the windows and lookbacks the rule modules implement (streamapp.rules)
STEPPED_SIZE, STEPPED_STEP, SEQUENCE_WITHIN, TUMBLING_SIZE = 60.0, 10.0, 300.0, 60.0


def operator_of(data: dict[str, Any]) -> str | None:
    """Which shipped rule's operator evaluates a (schema-valid) spec; None: the generic engine."""
    window = data.get("window") or {}
    kind = data["condition"]["type"]
    if "step" in window:
        return "stepped_count"
    if data.get("evaluate") == "eager":
        return "eager_sequence" if kind == "sequence" else "eager_max"
    if kind == "zscore" and window:
        return "windowed_zscore"
    if kind == "ratio" and "id" in data["alert"]:
        return "keyed_ratio"
    return None


@dataclass(frozen=True)
class SpecError:
    """One reason a spec is refused, where it is."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


class SpecInvalid(ValueError):
    """A spec that does not validate: every error found."""

    def __init__(self, errors: list[SpecError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class Spec:
    """A validated detection: its document (as JSON-able data) and what the engine derives from it."""

    data: dict[str, Any]
    name: str = field(init=False)
    version: int = field(init=False)
    grace: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.data["name"])
        object.__setattr__(self, "version", int(self.data["version"]))
        window = self.data.get("window") or {}
        grace = window.get("grace", self.data.get("grace", DEFAULT_GRACE))
        object.__setattr__(self, "grace", float(grace))

    @property
    def topic(self) -> str:
        return str(self.data["source"]["topic"])

    @property
    def fields(self) -> dict[str, str]:
        """Each declared source field's kind (string, number, bool, timestamp)."""
        return field_kinds(self.data)

    @property
    def bounds(self) -> dict[str, tuple[float | None, float | None]]:
        """(min, max) of the number fields declared with either (None: the default bound)."""
        return {
            name: (decl.get("min"), decl.get("max"))
            for name, decl in self.data["source"]["fields"].items()
            if isinstance(decl, dict) and ("min" in decl or "max" in decl)
        }

    @property
    def key(self) -> str:
        return str(self.data["key"])

    @property
    def time_field(self) -> str | None:
        return next((name for name, kind in self.fields.items() if kind == "timestamp"), None)

    @property
    def operator(self) -> str | None:
        """The shipped rule whose semantics this spec asks for (see :func:`operator_of`)."""
        return operator_of(self.data)

    @property
    def shape(self) -> str:
        """What a key's state depends on: a spec whose shape changes starts every key afresh.

        Thresholds (``condition.value``/``op``), texts, severity, throttle, filters and the
        version keep the state; the source, key, window, aggregate or condition kind (and its
        structural parameters) do not.
        """
        cond = {k: v for k, v in self.data["condition"].items() if k not in ("value", "op")}
        if cond["type"] == "sequence":  # the count is a threshold on what the state keeps
            cond.pop("count", None)
        parts = {
            "topic": self.topic,
            "key": self.key,
            "window": {k: v for k, v in (self.data.get("window") or {}).items() if k != "grace"},
            "aggregate": self.data.get("aggregate"),
            "condition": cond,
        }
        if self.data.get("evaluate", "held") != "held":  # so the shapes of other specs stay as they were
            parts["evaluate"] = self.data["evaluate"]
        if "id" in self.data["alert"]:
            parts["alert_id"] = self.data["alert"]["id"]
        return hashlib.sha1(
            orjson.dumps(parts, option=orjson.OPT_SORT_KEYS), usedforsecurity=False
        ).hexdigest()[:16]

    def to_json(self) -> bytes:
        return orjson.dumps(self.data, option=orjson.OPT_SORT_KEYS)


def field_kinds(data: dict[str, Any]) -> dict[str, str]:
    """The kind of each source field of a (schema-valid) spec: declared as it, or ``{type: kind, ...}``."""
    return {
        name: decl if isinstance(decl, str) else decl["type"]
        for name, decl in data["source"]["fields"].items()
    }


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema of a spec (docs/detection.schema.json)."""
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


def load_file(path: Path) -> Spec:
    """The spec in ``path``; raises :class:`SpecInvalid` with every error (file, line, reason)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecInvalid([SpecError(str(path), 0, f"cannot read: {exc.strerror or exc}")]) from None
    return load_text(raw, str(path))


def load_text(raw: bytes | str, file: str = "<spec>") -> Spec:
    """The spec in YAML (or JSON) text; raises :class:`SpecInvalid`."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > MAX_SPEC_BYTES:
        raise SpecInvalid([SpecError(file, 0, f"spec of {size} bytes exceeds the limit of {MAX_SPEC_BYTES}")])
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except UnicodeDecodeError:
        raise SpecInvalid([SpecError(file, 0, "not UTF-8 text")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecInvalid([SpecError(file, line, f"not valid YAML: {problem}")]) from None
    if not isinstance(data, dict):
        raise SpecInvalid([SpecError(file, 1, "a spec is a mapping (name: ..., source: ...)")])
    errors = _schema_errors(data, node, file)
    if not errors:
        errors = _meaning_errors(data, node, file)
    if errors:
        raise SpecInvalid(errors)
    # through JSON: the document the control topic carries is exactly what was validated
    return Spec(orjson.loads(orjson.dumps(data)))


def spec_from_json(raw: bytes) -> Spec:
    """A spec from a control record's value (JSON); raises :class:`SpecInvalid`."""
    return load_text(raw, "<control record>")


def _line(node: yaml.Node | None, path: list[Any]) -> int:
    """The line (1-based) of the value at ``path`` in the YAML node tree (the nearest found)."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == part:
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _where(path: list[Any]) -> str:
    return ".".join(str(p) for p in path) or "(top)"


def _schema_errors(data: dict[str, Any], node: yaml.Node, file: str) -> list[SpecError]:
    validator = jsonschema.Draft202012Validator(schema())
    errors = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        if error.context:  # a oneOf: the reasons of the branch of the same condition type
            kind = error.instance.get("type") if isinstance(error.instance, dict) else None
            branch = _branch_of(error, kind)
            chosen = branch or [jsonschema.exceptions.best_match(error.context)]
            for sub in chosen:
                path = list(sub.absolute_path)
                errors.append(SpecError(file, _line(node, path), f"{_where(path)}: {sub.message}"))
            continue
        path = list(error.absolute_path)
        errors.append(SpecError(file, _line(node, path), f"{_where(path)}: {error.message}"))
    return errors


def _branch_of(error: jsonschema.ValidationError, kind: Any) -> list[jsonschema.ValidationError]:
    branches: dict[int, list[jsonschema.ValidationError]] = {}
    for sub in error.context or []:
        branches.setdefault(int(sub.schema_path[0]), []).append(sub)
    options = error.schema.get("oneOf", [])  # type: ignore[union-attr]
    for index, subschema in enumerate(options):
        if subschema.get("properties", {}).get("type", {}).get("const") == kind:
            return branches.get(index, [])
    objects = [index for index, subschema in enumerate(options) if subschema.get("type") == "object"]
    if isinstance(error.instance, dict) and len(objects) == 1:  # a field's {type: ..., min, max}
        return branches.get(objects[0], [])
    return []


def _meaning_errors(data: dict[str, Any], node: yaml.Node, file: str) -> list[SpecError]:
    """What the schema cannot say: fields that exist and have the right type, regexes, templates."""
    errors: list[SpecError] = []

    def err(path: list[Any], reason: str) -> None:
        errors.append(SpecError(file, _line(node, path), f"{_where(path)}: {reason}"))

    fields = field_kinds(data)
    if sum(kind == "timestamp" for kind in fields.values()) > 1:
        err(["source", "fields"], "at most one field may be a timestamp (the event time)")
    topic = data["source"]["topic"]
    contract = INPUTS[topic].fields if topic in INPUTS else {}
    for name, decl in data["source"]["fields"].items():
        kind = fields[name]
        if isinstance(decl, dict) and kind != "number" and ("min" in decl or "max" in decl):
            err(["source", "fields", name], f"min and max bound number fields only; {name!r} is {kind}")
        elif isinstance(decl, dict) and decl.get("min", -math.inf) > decl.get("max", math.inf):
            err(["source", "fields", name, "min"], f"min {decl['min']:g} is above max {decl['max']:g}")
        if name in contract and kind != contract[name]:
            err(
                ["source", "fields", name],
                f"{name!r} of {topic} is a {contract[name]} field (docs/contract.md), not {kind}",
            )
    if data["key"] not in fields:
        err(["key"], f"field {data['key']!r} is not declared in source.fields")
    elif fields[data["key"]] != "string":
        err(["key"], f"the key field {data['key']!r} must be a string field")

    def check_filters(filters: list[dict[str, Any]], path: list[Any]) -> None:
        for i, flt in enumerate(filters):
            name = flt["field"]
            kind = fields.get(name)
            op = next(k for k in flt if k != "field")
            if kind is None:
                err([*path, i, "field"], f"field {name!r} is not declared in source.fields")
                continue
            if op in (">", ">=", "<", "<=") and kind not in ("number", "timestamp"):
                err([*path, i, op], f"{op} needs a number field; {name!r} is {kind}")
            if op == "is" and kind != "bool":
                err([*path, i, op], f"'is' needs a bool field; {name!r} is {kind}")
            if op in ("match", "contains") and kind != "string":
                err([*path, i, op], f"{op} needs a string field; {name!r} is {kind}")
            if op == "match":
                try:
                    re.compile(flt["match"])
                except re.error as exc:
                    err([*path, i, "match"], f"not a valid regular expression: {exc}")

    check_filters(data.get("where") or [], ["where"])
    cond = data["condition"]
    window = data.get("window")
    aggregate = data.get("aggregate")
    if cond["type"] == "threshold":
        if window is None:
            err(["condition"], "a threshold condition needs a window")
        if aggregate is None:
            err(["condition"], "a threshold condition needs an aggregate")
    else:
        for extra in ("window", "aggregate"):
            if extra in data and not (extra == "window" and cond["type"] == "zscore"):
                err([extra], f"a {cond['type']} condition takes no {extra}")
    if window is not None and window["type"] == "hopping" and window["advance"] > window["size"]:
        err(["window", "advance"], "a hopping window's advance must not exceed its size")
    if window is not None and window["type"] != "session" and "gap" in window:
        err(["window", "gap"], "only a session window has a gap")
    if window is not None and window["type"] == "session" and "size" in window:
        err(["window", "size"], "a session window has a gap, not a size")
    if aggregate is not None:
        name = aggregate.get("field")
        if name is None and aggregate["fn"] != "count":
            err(["aggregate"], f"{aggregate['fn']} needs a field")
        elif name is not None and name not in fields:
            err(["aggregate", "field"], f"field {name!r} is not declared in source.fields")
        elif (
            name is not None
            and aggregate["fn"] not in ("count", "distinct_count")
            and fields[name] != "number"
        ):
            err(["aggregate", "field"], f"{aggregate['fn']} needs a number field; {name!r} is {fields[name]}")
    if cond["type"] in ("zscore", "ratio"):
        name = cond["field"]
        if fields.get(name) != "number":
            err(["condition", "field"], f"field {name!r} must be a number field declared in source.fields")
    if cond["type"] == "sequence":
        check_filters(cond["first"], ["condition", "first"])
        check_filters(cond["then"], ["condition", "then"])
    operator = operator_of(data)
    if operator is not None:
        _operator_errors(operator, data, err)
    if "id" in data["alert"] and operator != "keyed_ratio":
        err(["alert", "id"], "only a ratio condition takes an alert id")
    allowed = TEMPLATE_NAMES | template_fields(data) | OPERATOR_NAMES.get(operator or "", frozenset())
    try:
        parsed = list(string.Formatter().parse(data["alert"]["text"]))
    except ValueError as exc:
        err(["alert", "text"], f"not a valid template: {exc}")
        parsed = []
    for _, name, spec_, conversion in parsed:
        if name is None:
            continue
        if name not in allowed:
            err(["alert", "text"], f"unknown name {{{name}}} (allowed: {', '.join(sorted(allowed))})")
        if conversion or (spec_ and "{" in spec_):
            err(["alert", "text"], f"{{{name}}}: conversions and nested fields are not allowed")
        if spec_:
            try:
                format(1.0, spec_)
            except ValueError:
                err(["alert", "text"], f"{{{name}:{spec_}}}: not a number format")
    return errors


def template_fields(data: dict[str, Any]) -> set[str]:
    """The source fields an alert text may name.

    Every field, but for the operators that alert about an event other than the one arriving (a
    held event, a sequence's earlier success): the key, the event time and the fields they keep.
    """
    operator, fields = operator_of(data), set(data["source"]["fields"])
    if operator not in ("eager_sequence", "windowed_zscore", "keyed_ratio"):
        return fields
    time = {name for name, kind in field_kinds(data).items() if kind == "timestamp"}
    kept = {data["condition"].get("field"), data["alert"].get("id")} - {None}
    return {data["key"], *time, *kept} & fields


def _operator_errors(operator: str, data: dict[str, Any], err: Callable[[list[Any], str], None]) -> None:
    """What a spec asking for a shipped rule's semantics must be: what that rule implements."""
    window, cond = data.get("window") or {}, data["condition"]
    aggregate, throttle = data.get("aggregate") or {}, data.get("throttle")
    eager = data.get("evaluate") == "eager"
    if operator == "stepped_count":
        if window["type"] != "sliding":
            err(["window", "step"], "only a sliding window has a step")
        elif (window.get("size"), window["step"]) != (STEPPED_SIZE, STEPPED_STEP):
            err(
                ["window"],
                f"a stepped sliding window is {STEPPED_SIZE:g} s in {STEPPED_STEP:g}-s steps "
                "(the one implemented, streamapp.rules.sliding_count)",
            )
        if not eager:
            err(["window", "step"], "a stepped sliding window is evaluated eagerly: add evaluate: eager")
        if cond["type"] != "threshold" or cond["op"] != ">" or aggregate.get("fn") != "count":
            err(["condition"], "a stepped sliding window counts: aggregate fn count, condition threshold >")
        if throttle is not None and throttle != window.get("size"):
            err(
                ["throttle"],
                "a stepped sliding window's alerting windows never overlap: throttle is its size or absent",
            )
        return
    if throttle is not None:
        err(["throttle"], f"a {_OPERATOR_TEXT[operator]} takes no throttle")
    if operator == "eager_sequence" and cond["within"] != SEQUENCE_WITHIN:
        err(
            ["condition", "within"],
            f"an eager sequence looks back {SEQUENCE_WITHIN:g} s "
            "(the one implemented, streamapp.rules.account_takeover)",
        )
    if operator == "eager_max" and not (
        window.get("type") == "tumbling" and window.get("size") == TUMBLING_SIZE
        and aggregate.get("fn") == "max" and cond["type"] == "threshold" and cond["op"] == ">"
    ):  # fmt: skip
        err(
            ["evaluate"],
            "evaluate: eager needs a condition more events can only make true: a stepped "
            f"sliding count, a sequence, or the max of a {TUMBLING_SIZE:g}-s tumbling window above a value",
        )
    if operator == "windowed_zscore" and (window["type"], window.get("size")) != ("tumbling", TUMBLING_SIZE):
        err(
            ["window"],
            f"a zscore condition's window is tumbling, {TUMBLING_SIZE:g} s "
            "(the one implemented, streamapp.rules.temperature)",
        )
    if operator == "keyed_ratio" and field_kinds(data).get(data["alert"]["id"]) != "string":
        name = data["alert"]["id"]
        err(["alert", "id"], f"field {name!r} must be a string field declared in source.fields")


_OPERATOR_TEXT = {
    "eager_sequence": "eager sequence",
    "eager_max": "eager tumbling max",
    "windowed_zscore": "zscore condition with a window",
    "keyed_ratio": "ratio condition with an alert id",
}
