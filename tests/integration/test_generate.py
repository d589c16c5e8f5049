"""`streamapp generate` against a real worker: every injected incident is alerted, nothing else is."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter

import orjson
import pytest

from tests.integration.kafka_io import read_all, read_until

pytestmark = pytest.mark.integration

KINDS = {
    "brute_force",
    "account_takeover",
    "high_temperature",
    "temperature_anomaly",
    "card_velocity",
    "amount_spike",
}


async def test_generated_incidents_are_all_alerted_and_background_never_is(
    kafka_bootstrap, names, worker_factory, tmp_path
):
    worker = worker_factory()
    incidents_path = tmp_path / "inc.jsonl"
    env = {
        **os.environ,
        "STREAMAPP_BROKER": f"kafka://{kafka_bootstrap}",
        "STREAMAPP_APP_ID": names.app_id,
        "STREAMAPP_TOPIC_PREFIX": names.prefix,
    }
    command = [
        sys.executable, "-m", "streamapp.cli", "generate", "--duration", "50", "--rate", "100",
        "--seed", "3", "--incidents", str(incidents_path),
    ]  # fmt: skip
    done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, timeout=180)
    log = done.stderr.decode(errors="replace")
    assert done.returncode == 0, log
    assert "incidents injected" in log  # progress is logged every 10 s

    incidents = [orjson.loads(line) for line in incidents_path.read_bytes().splitlines()]
    injected = {(i["kind"], i["key"]) for i in incidents}
    assert {kind for kind, _ in injected} == KINDS, incidents
    assert len(injected) == len(incidents)  # every incident on a fresh key

    def alerted(records: list) -> set[tuple[str, str]]:
        return {(a["kind"], a["key"]) for a in map(orjson.loads, (r.value for r in records))}

    try:
        await read_until(kafka_bootstrap, names.topic("alerts"), lambda recs: injected <= alerted(recs), 90)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; worker log:\n{worker.log_tail()}") from None
    # give the worker time to publish anything else it might still find in the background
    alerts = [orjson.loads(r.value) for r in await read_all(kafka_bootstrap, names.topic("alerts"), 5.0)]
    by_kind = Counter(a["kind"] for a in alerts)
    assert set(by_kind) == KINDS
    missing = injected - {(a["kind"], a["key"]) for a in alerts}
    assert not missing, f"injected but not alerted: {sorted(missing)}"
    unexpected = [a for a in alerts if (a["kind"], a["key"]) not in injected]
    assert not unexpected, f"background traffic alerted: {unexpected}"
    assert not {a["key"] for a in alerts} - {key for _, key in injected}
    assert len({a["alert_id"] for a in alerts}) == len(injected)  # one alert per incident
    print(f"\n[figures] {len(incidents)} incidents, alerts per kind: {dict(sorted(by_kind.items()))}")
