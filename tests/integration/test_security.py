"""Security on a real secured broker: SASL_SSL with SCRAM, ACLs, TLS only, and the web token."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as kafka_errors

from streamapp.dev.kafka import KAFKA_VERSION, DevBroker, fetch_kafka_jars
from streamapp.runtime.kafka_clients import client_kwargs
from streamapp.settings import load_settings
from tests.integration.conftest import Names, Worker, free_port

pytestmark = pytest.mark.integration

NO_ACL_USER = "intruder"


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevBroker]:
    """A broker of this module's own (`kafka up --secure` code), on free ports, reusing the jars."""
    real_libs = fetch_kafka_jars()
    home = tmp_path_factory.mktemp("secure-home")
    version_dir = home / "kafka" / KAFKA_VERSION
    version_dir.mkdir(parents=True)
    (version_dir / "libs").symlink_to(real_libs, target_is_directory=True)
    broker = DevBroker(
        home=home, port=free_port(), controller_port=free_port(), secure=True, secure_port=free_port(),
        extra_users=(NO_ACL_USER,),
    )  # fmt: skip
    broker.up(timeout=180)
    yield broker
    broker.down()


def _env(broker: DevBroker, user: str = "streamapp", password: str | None = None) -> dict[str, str]:
    assert broker.material is not None
    return {
        "STREAMAPP_BROKER": f"kafka://{broker.secure_bootstrap}",
        "STREAMAPP_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMAPP_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAMAPP_SASL_USERNAME": user,
        "STREAMAPP_SASL_PASSWORD": broker.material.password(user) if password is None else password,
        "STREAMAPP_SSL_CAFILE": str(broker.material.ca_file),
    }


@pytest.fixture
def secured_app(secure_broker: DevBroker, names: Names) -> dict[str, str]:
    """This test's app id and topic prefix granted to user ``streamapp``; its settings."""
    secure_broker.grant_app("streamapp", names.app_id, names.prefix)
    return {**_env(secure_broker), "STREAMAPP_APP_ID": names.app_id, "STREAMAPP_TOPIC_PREFIX": names.prefix}


def _streamapp(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamapp.cli", *args], env={**os.environ, **env},
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def _get(worker: Worker, path: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(worker.url + path)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            body = resp.read()
            try:
                return resp.status, json.loads(body)
            except ValueError:
                return resp.status, {"raw": body.decode(errors="replace")}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _wait_for(
    worker: Worker, path: str, token: str, check: Callable[[int, dict], bool], timeout: float = 180
) -> dict:
    deadline = time.monotonic() + timeout
    status, body = 0, {}
    while time.monotonic() < deadline:
        try:
            status, body = _get(worker, path, token)
            if check(status, body):
                return body
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"GET {path} never satisfied the check; last {status} {body}\n{worker.log_tail()}")


async def _read_alerts(settings_env: dict[str, str], topic: str, within: float = 180) -> list[dict]:
    settings = load_settings(settings_env)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False, group_id=None,
        metadata_max_age_ms=1000, **client_kwargs(settings),
    )  # fmt: skip
    await consumer.start()
    try:
        deadline = time.monotonic() + within
        partitions: set[int] = set()
        while not partitions:
            assert time.monotonic() < deadline, f"topic {topic} never appeared"
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
            await asyncio.sleep(0.5)
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        found: list[dict] = []
        while not found:
            assert time.monotonic() < deadline, f"no alert on {topic}"
            batch = await consumer.getmany(timeout_ms=1000)
            found += [orjson.loads(r.value) for records in batch.values() for r in records]
        return found
    finally:
        await consumer.stop()


async def test_worker_over_sasl_ssl_end_to_end_with_web_token(
    secure_broker: DevBroker, secured_app: dict[str, str], names: Names, worker_factory
) -> None:
    token = "tok-" + os.urandom(12).hex()
    password = secured_app["STREAMAPP_SASL_PASSWORD"]
    env = {**secured_app, "STREAMAPP_WEB_TOKEN": token, "STREAMAPP_LOG_LEVEL": "debug"}
    # a loaded machine: more time than worker_factory's default to get ready
    first = worker_factory(ready=False, **env, STREAMAPP_PROCESSING_GUARANTEE="exactly_once").wait_ready(180)

    # the generator (CLI) produces over SASL_SSL with the app's credentials
    generated = _streamapp(
        "generate", "--scenario", "logins", "--rate", "20", "--duration", "2", "--seed", "7", env=secured_app
    )
    assert generated.returncode == 0, generated.stderr
    ip = "203.0.113.77"
    base = (time.time() // 10) * 10 - 30
    settings = load_settings(secured_app)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, **client_kwargs(settings))
    await producer.start()
    try:
        for i in range(7):
            event = {"ts": base + i, "ip": ip, "user": "root", "success": False}
            await producer.send_and_wait(names.topic("logins"), orjson.dumps(event), key=ip.encode())
    finally:
        await producer.stop()

    alerts = await _read_alerts(secured_app, names.topic("alerts"))
    assert any(a["kind"] == "brute_force" and a["key"] == ip for a in alerts), alerts
    body = _wait_for(first, f"/ips/{ip}", token, lambda s, b: s == 200 and b["failed_logins_60s"] >= 7)
    assert body["ip"] == ip

    # a second worker: whichever owns the key, both answer (the forwarded request keeps the token)
    second = worker_factory(ready=False, **env, STREAMAPP_PROCESSING_GUARANTEE="exactly_once").wait_ready(180)
    for worker in (first, second):
        _wait_for(worker, f"/ips/{ip}", token, lambda s, b: s == 200 and b["ip"] == ip)
        for path in (f"/ips/{ip}", "/alerts", "/sensors", "/ips/nobody"):
            status, answer = _get(worker, path)
            assert status == 401 and "error" in answer, (path, status, answer)
            assert _get(worker, path, token="wrong-" + token)[0] == 401
        assert _get(worker, "/alerts", token)[0] == 200
        for path in ("/health", "/metrics"):
            assert _get(worker, path)[0] == 200, path
        # /ready needs no token either: 503, never 401, while the second worker's rebalance settles
        deadline = time.monotonic() + 120
        while (status := _get(worker, "/ready")[0]) != 200 and time.monotonic() < deadline:
            assert status == 503, status
            await asyncio.sleep(0.5)
        assert status == 200, worker.log_tail()
        assert _get(worker, "/")[0] == 200  # the live page's static shell; its data requests need the token

    logs = first.log_text() + second.log_text() + generated.stdout + generated.stderr
    assert "SASL_SSL" in first.log_text() or "sasl" in first.log_text().lower()
    assert password not in logs and token not in logs


async def test_wrong_password_stops_the_worker_at_start(
    secure_broker: DevBroker, secured_app: dict[str, str], worker_factory
) -> None:
    wrong = "wrong-" + os.urandom(8).hex()
    started = time.monotonic()
    worker = worker_factory(ready=False, **{**secured_app, "STREAMAPP_SASL_PASSWORD": wrong})
    assert worker.proc is not None
    code = worker.proc.wait(timeout=60)
    took = time.monotonic() - started
    log = worker.log_text()
    assert code != 0
    assert took < 30, f"took {took:.1f} s"
    assert "authentication failed" in log.lower() and "streamapp" in log, log
    assert wrong not in log
    assert len([line for line in log.splitlines() if line.startswith("streamapp: error:")]) == 1, log


async def test_principal_without_acls_is_refused(
    secure_broker: DevBroker, secured_app: dict[str, str], names: Names, worker_factory
) -> None:
    intruder = {**secured_app, **_env(secure_broker, NO_ACL_USER)}
    worker = worker_factory(ready=False, **intruder)
    assert worker.proc is not None
    assert worker.proc.wait(timeout=60) != 0
    log = worker.log_text()
    assert "authorization failed" in log.lower() and NO_ACL_USER in log, log
    assert intruder["STREAMAPP_SASL_PASSWORD"] not in log

    # the same principal through a plain aiokafka client: authenticated, but not authorized
    settings = load_settings(intruder)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=10000, **client_kwargs(settings)
    )
    await producer.start()
    try:
        with pytest.raises(kafka_errors.TopicAuthorizationFailedError):
            await producer.send_and_wait(names.topic("logins"), b"{}")
    finally:
        await producer.stop()
    # ... and the CLI says so in one line too (dlq reads dead-letters)
    listed = _streamapp("dlq", "list", env=intruder)
    assert listed.returncode != 0
    assert listed.stderr.startswith("streamapp: error: Kafka authorization failed"), listed.stderr
    assert len(listed.stderr.strip().splitlines()) == 1, listed.stderr
    assert intruder["STREAMAPP_SASL_PASSWORD"] not in listed.stdout + listed.stderr


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
async def test_clients_without_tls_cannot_use_the_secured_listener(
    secure_broker: DevBroker, protocol: str
) -> None:
    assert secure_broker.material is not None
    host, _, port = secure_broker.secure_bootstrap.rpartition(":")
    options: dict[str, object] = {"security_protocol": protocol}
    if protocol == "SASL_PLAINTEXT":
        options.update(
            sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="streamapp",
            sasl_plain_password=secure_broker.material.password("streamapp"),
        )  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=f"{host}:{port}", request_timeout_ms=5000, **options)
    with pytest.raises(kafka_errors.KafkaConnectionError):
        await asyncio.wait_for(producer.start(), 30)
    await producer.stop()


def test_kafka_up_secure_cli_prints_where_the_password_is_not_the_password(
    secure_broker: DevBroker, tmp_path: Path
) -> None:
    assert secure_broker.material is not None
    env = {"STREAMAPP_HOME": str(secure_broker.home)}
    out = _streamapp(
        "kafka", "up", "--secure", "--port", str(secure_broker.port),
        "--controller-port", str(secure_broker.controller_port),
        "--secure-port", str(secure_broker.secure_port), env=env, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    assert f"SASL_SSL on {secure_broker.secure_bootstrap}" in text
    password_file = secure_broker.material.password_file("streamapp")
    assert str(password_file) in text and str(secure_broker.material.ca_file) in text
    assert password_file.stat().st_mode & 0o777 == 0o600
    broker_log = secure_broker.log_file.read_text(errors="replace")
    for user in ("streamapp", "admin", NO_ACL_USER):
        assert secure_broker.material.password(user) not in text
        assert secure_broker.material.password(user) not in broker_log
    assert secure_broker.material.keystore_password not in broker_log
    assert secure_broker.config_file.stat().st_mode & 0o777 == 0o600
    plain = _streamapp(
        "kafka", "up", "--port", str(secure_broker.port),
        "--controller-port", str(secure_broker.controller_port), env=env,
    )  # fmt: skip
    # a plain `up` leaves the running secure broker as it is (its PLAINTEXT listener is still there)
    assert plain.returncode == 0, plain.stderr
    assert f"SASL_SSL on {secure_broker.secure_bootstrap}" in plain.stdout


async def test_live_page_works_with_the_token_in_its_fragment(
    kafka_bootstrap: str, names: Names, worker_factory, tmp_path: Path
) -> None:
    from tests.integration.chromium import Browser
    from tests.integration.kafka_io import produce

    token = "live-" + os.urandom(12).hex()
    worker = worker_factory(STREAMAPP_WEB_TOKEN=token)
    async with Browser(tmp_path / "chromium-profile", tmp_path / "chromium.log") as browser:
        # without the token the shell loads, and every data request it makes is refused
        bare = await browser.open(worker.url + "/")
        status = await bare.wait_for(
            "(() => { const s = document.getElementById('status');"
            " return s.className === 'error' ? s.textContent : null; })()"
        )
        assert "HTTP 401" in status
        page = await browser.open(f"{worker.url}/#token={token}")
        await page.wait_for("document.getElementById('status').textContent.startsWith('updated')")
        base = (time.time() // 10) * 10 - 30
        logins = [{"ts": base + i, "ip": "192.0.2.99", "user": "u", "success": False} for i in range(7)]
        await produce(kafka_bootstrap, names.topic("logins"), logins)
        rows = await page.wait_for(
            "(() => { const r = [...document.querySelectorAll('tr.alert-row')].map(tr => tr.dataset.key);"
            " return r.length ? r : null; })()",
            within=90,
        )
        assert rows == ["192.0.2.99"]
    assert token not in worker.log_text()
