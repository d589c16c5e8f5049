"""`streamapp demo`'s terminal: alerts and its own lines; the Kafka clients' warnings go to its log file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from streamapp.ops.demo import format_alert, library_logs_to


def test_aiokafka_warnings_go_to_the_log_file_not_the_terminal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "demo.log"
    with library_logs_to(log):
        logging.getLogger("aiokafka.cluster").warning("Topic alerts not found in cluster metadata")
        logging.getLogger("aiokafka.consumer.fetcher").warning("Unexpected error: NotLeaderForPartitionError")
        print("10:00:00  brute_force          198.51.100.7       6 failed logins")
    out, err = capfd.readouterr()
    assert out == "10:00:00  brute_force          198.51.100.7       6 failed logins\n"
    assert err == ""
    written = log.read_text()
    assert "WARNING aiokafka.cluster: Topic alerts not found in cluster metadata" in written
    assert "NotLeaderForPartitionError" in written


def test_a_stderr_handler_set_up_before_is_silenced_then_restored(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    stderr_handler = logging.StreamHandler()
    root.addHandler(stderr_handler)
    try:
        before = root.handlers[:], root.level
        with library_logs_to(tmp_path / "demo.log"):
            logging.getLogger("aiokafka").warning("inside")
        assert (root.handlers, root.level) == before
        logging.getLogger("aiokafka").warning("after")
    finally:
        root.removeHandler(stderr_handler)
    err = capfd.readouterr().err
    assert "inside" not in err and "after" in err


def test_format_alert_is_one_line_with_kind_key_and_detail() -> None:
    line = format_alert(
        {"ts": 1767225600, "kind": "brute_force", "key": "198.51.100.7", "detail": "6 failed logins"}
    )
    assert "\n" not in line
    assert line.split()[1:3] == ["brute_force", "198.51.100.7"]
    assert line.endswith("6 failed logins")
