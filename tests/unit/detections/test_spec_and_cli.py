"""Specs refused with file, line and reason; the CLI's validate and test; state kept or fresh per version."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from streamapp.cli import main
from streamapp.detections.engine import Engine
from streamapp.detections.spec import SpecInvalid, load_file, load_text
from streamapp.detections.testing import run

ROOT = Path(__file__).resolve().parents[3]
PORT_SCAN = ROOT / "detections" / "port_scan.yaml"
SILENT = ROOT / "detections" / "silent_sensor.yaml"


def _errors(text: str) -> list[str]:
    with pytest.raises(SpecInvalid) as caught:
        load_text(text, "d.yaml")
    return [str(e) for e in caught.value.errors]


def test_shipped_specs_validate() -> None:
    assert load_file(PORT_SCAN).name == "port_scan"
    assert load_file(SILENT).data["condition"] == {"type": "absence", "after": 300}


def test_errors_name_file_line_and_reason() -> None:
    text = PORT_SCAN.read_text()
    assert _errors(text.replace("fn: distinct_count", "fn: median")) == [
        "d.yaml:26: aggregate.fn: 'median' is not one of "
        "['count', 'sum', 'min', 'max', 'mean', 'stddev', 'distinct_count']"
    ]
    assert _errors(text.replace("key: src_ip", "key: source")) == [
        "d.yaml:17: key: field 'source' is not declared in source.fields"
    ]
    assert _errors(text.replace("{dst_ip}", "{dst_ip.__class__}")) == [
        "d.yaml:34: alert.text: unknown name {dst_ip.__class__} (allowed: dst_ip, dst_port, key, name, "
        "proto, severity, src_ip, threshold, ts, value, window_end, window_start)"
    ]
    assert _errors("name: [unclosed\n") == [
        "d.yaml:2: not valid YAML: expected ',' or ']', but got '<stream end>'"
    ]
    assert _errors(text.replace("  type: sliding\n  size: 60", "  type: hopping\n  size: 60")) == [
        "d.yaml:21: window: 'advance' is a required property"
    ]


def test_condition_errors_come_from_the_branch_of_its_type() -> None:
    text = SILENT.read_text().replace("after: 300", "after: -1")
    assert _errors(text) == ["d.yaml:18: condition.after: -1 is less than or equal to the minimum of 0"]


def test_filters_are_checked_against_the_declared_types() -> None:
    text = PORT_SCAN.read_text().replace("in: [tcp, udp]", "match: '('")
    assert len(_errors(text)) == 1 and "not a valid regular expression" in _errors(text)[0]
    text = PORT_SCAN.read_text().replace("field: proto\n    in: [tcp, udp]", "field: proto\n    '>': 3")
    assert _errors(text) == ["d.yaml:20: where.0.>: > needs a number field; 'proto' is string"]


def test_a_regex_longer_than_200_characters_is_refused() -> None:
    text = PORT_SCAN.read_text().replace("in: [tcp, udp]", "match: '" + "a" * 201 + "'")
    assert "is too long" in _errors(text)[0]


def _flows(n: int, base: float = 1000.0, ip: str = "1.2.3.4") -> list[dict]:
    return [{"ts": base + i, "src_ip": ip, "dst_ip": "d", "dst_port": i, "proto": "tcp"} for i in range(n)]


def test_only_thresholds_and_texts_keep_the_state() -> None:
    spec = load_file(PORT_SCAN)
    text = PORT_SCAN.read_text()
    tuned = load_text(text.replace("value: 20", "value: 5").replace("version: 1", "version: 2"))
    reworded = load_text(text.replace("reached", "hit").replace("severity: high", "severity: low"))
    rewindowed = load_text(text.replace("size: 60", "size: 30"))
    rekeyed = load_text(text.replace("key: src_ip", "key: dst_ip"))
    assert spec.shape == tuned.shape == reworded.shape
    assert spec.shape != rewindowed.shape and spec.shape != rekeyed.shape
    state = Engine(spec).new_state()
    for i, flow in enumerate(_flows(10)):
        Engine(spec).offer(state, "1.2.3.4", flow["ts"], {**flow, "dst_port": float(i)})
    assert Engine(tuned).adopt(state) is state  # the held flows and window go on
    assert Engine(rewindowed).adopt(state) == Engine(rewindowed).new_state()


def test_a_lower_threshold_on_the_kept_state_alerts_on_the_next_event() -> None:
    spec = load_text(PORT_SCAN.read_text().replace("grace: 10", "grace: 0.5"))
    tuned = load_text(spec.to_json().decode().replace('"value":20', '"value":5'))
    engine, state = Engine(spec), Engine(spec).new_state()
    for flow in _flows(8):
        assert engine.offer(state, "1.2.3.4", flow["ts"], flow) == []
    state = Engine(tuned).adopt(state)
    flow = _flows(9)[-1]
    alerts = Engine(tuned).offer(state, "1.2.3.4", flow["ts"], flow)
    # the 9th flow judges the 8th (its clock passed it by the grace): 8 distinct ports > 5, counted
    # over the flows the old version held
    assert [(a.value, a.threshold, a.ts) for a in alerts] == [(8.0, 5.0, 1007.0)]


def test_late_events_are_refused_with_their_reason() -> None:
    spec = load_file(PORT_SCAN)
    events = [*_flows(3, base=1000.0), *_flows(1, base=900.0)]
    outcome = run(spec, events)
    assert outcome.late == [(3, "102.000 s behind the newest event of its key (grace 10 s)")]


def test_invalid_events_name_the_field() -> None:
    spec = load_file(PORT_SCAN)
    bad = [{"ts": 1000, "src_ip": "a", "dst_ip": "d", "dst_port": "22", "proto": "tcp"},
           {"ts": 1000, "src_ip": "a", "dst_ip": "d", "proto": "tcp"},
           {"ts": 1000, "src_ip": "__faust", "dst_ip": "d", "dst_port": 1, "proto": "tcp"}]  # fmt: skip
    assert [reason for _, reason in run(spec, bad).invalid] == [
        "field 'dst_port' must be a finite number, got string (detection port_scan)",
        "field 'dst_port' is missing (detection port_scan)",
        "field 'src_ip' starts with '__faust', the prefix of the stream library's own keys"
        " (detection port_scan)",
    ]


def test_cli_validate_exits_1_with_every_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(PORT_SCAN.read_text().replace("severity: high", "severity: urgent"))
    result = CliRunner().invoke(main, ["detections", "validate", str(PORT_SCAN), str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:8: severity: 'urgent' is not one of ['low', 'medium', 'high', 'critical']" in result.output
    ok = CliRunner().invoke(main, ["detections", "validate", str(PORT_SCAN), str(SILENT)])
    assert ok.exit_code == 0 and "port_scan version 1: valid" in ok.output


def test_cli_test_prints_the_alerts_it_would_raise(tmp_path: Path) -> None:
    events = tmp_path / "flows.jsonl"
    events.write_text("\n".join(orjson.dumps(f).decode() for f in _flows(25)) + "\n")
    result = CliRunner().invoke(main, ["detections", "test", str(PORT_SCAN), "--events", str(events)])
    assert result.exit_code == 0, result.output
    alerts = [orjson.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [(a["kind"], a["key"], a["value"], a["ts"]) for a in alerts] == [
        ("port_scan", "1.2.3.4", 21.0, 1020.0)
    ]
    assert "1 alerts from 25 events (0 invalid, 0 late)" in result.stderr
