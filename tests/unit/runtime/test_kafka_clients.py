"""Kafka client security options, the web token middleware and the dev broker's secure settings."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from streamapp.dev import secure
from streamapp.dev.kafka import DevBroker
from streamapp.runtime.kafka_clients import broker_credentials, client_kwargs
from streamapp.settings import load_settings
from streamapp.web.auth import OPEN_PATHS, token_middleware

CA = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")


def _sasl_env(**extra: str) -> dict[str, str]:
    return {
        "STREAMAPP_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMAPP_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAMAPP_SASL_USERNAME": "streamapp",
        "STREAMAPP_SASL_PASSWORD": "pw-123",
        **extra,
    }


def test_plaintext_clients_get_no_security_options() -> None:
    settings = load_settings({})
    assert client_kwargs(settings) == {"security_protocol": "PLAINTEXT"}
    assert broker_credentials(settings) is None


def test_sasl_ssl_clients_get_scram_and_a_verifying_tls_context() -> None:
    settings = load_settings(_sasl_env(STREAMAPP_SSL_CAFILE=str(CA)))
    kwargs = client_kwargs(settings)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("streamapp", "pw-123")
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    credentials = broker_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL" and credentials.mechanism.value == "SCRAM-SHA-512"
    assert "pw-123" not in repr(credentials)


def test_ssl_only_clients_get_tls() -> None:
    settings = load_settings({"STREAMAPP_SECURITY_PROTOCOL": "SSL"})
    assert client_kwargs(settings)["security_protocol"] == "SSL"
    assert "sasl_mechanism" not in client_kwargs(settings)
    assert isinstance(broker_credentials(settings), faust.SSLCredentials)


async def _client(token: str) -> TestClient:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})

    application = web.Application(middlewares=[token_middleware(token)])
    for path in ("/", "/health", "/ready", "/live", "/metrics", "/ips/{ip}", "/alerts", "/healthz"):
        application.router.add_get(path, hello)
    client = TestClient(TestServer(application))
    await client.start_server()
    return client


async def test_token_middleware_guards_every_path_but_the_open_ones() -> None:
    client = await _client("s3cret")
    try:
        for path in ("/ips/1.2.3.4", "/alerts", "/healthz", "/ips/..%2Fhealth"):
            wrong = ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                     {"Authorization": "Bearer s3cret2"}, {"Authorization": "Basic s3cret"})  # fmt: skip
            for headers in wrong:
                response = await client.get(path, headers=headers)
                assert response.status == 401, (path, headers)
                assert "error" in await response.json()
            response = await client.get(path, headers={"Authorization": "Bearer s3cret"})
            assert response.status in (200, 404), path
        for path in OPEN_PATHS:
            assert (await client.get(path)).status == 200, path
        assert OPEN_PATHS == {"/health", "/ready", "/live", "/metrics", "/"}
    finally:
        await client.close()


def test_acls_cover_only_the_apps_resources() -> None:
    plain, literal = secure.acl_commands("streamapp", "streamapp")
    assert plain[plain.index("--resource-pattern-type") + 1] == "prefixed"
    for option in ("--topic", "--group", "--transactional-id"):
        assert plain[plain.index(option) + 1] == "streamapp"
    assert literal[literal.index("--resource-pattern-type") + 1] == "literal"
    topics = [literal[i + 1] for i, arg in enumerate(literal) if arg == "--topic"]
    assert topics == secure.app_topic_names("")
    assert "--cluster" not in plain + literal
    (prefixed,) = secure.acl_commands("u", "t1", "t1-")
    assert [prefixed[i + 1] for i, arg in enumerate(prefixed) if arg == "--topic"] == ["t1", "t1-"]


def test_secure_broker_properties_and_scram_users(tmp_path: Path) -> None:
    material = secure.SecureMaterial(tmp_path, ("admin", "streamapp"))
    for name in ("keystore", "admin", "streamapp"):
        (tmp_path / f"{name}.password").write_text(f"{name}-pw\n")
    broker = DevBroker(home=tmp_path, port=1, controller_port=2, secure=True, secure_port=3)
    broker.material = material
    props = dict(line.split("=", 1) for line in broker._server_properties().splitlines() if line)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:1,SASL_SSL://127.0.0.1:3,CONTROLLER://127.0.0.1:2"
    assert "SASL_SSL:SASL_SSL" in props["listener.security.protocol.map"]
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin;User:ANONYMOUS"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["ssl.keystore.type"] == "PKCS12"
    args = secure.scram_arguments(material)
    assert args == ["--add-scram", "SCRAM-SHA-512=[name=admin,password=admin-pw]",
                    "--add-scram", "SCRAM-SHA-512=[name=streamapp,password=streamapp-pw]"]  # fmt: skip
    # without --secure nothing of it is there
    plain = DevBroker(home=tmp_path, port=1, controller_port=2)._server_properties()
    assert "SASL" not in plain and "authorizer" not in plain


@pytest.mark.parametrize("user", ["streamapp", "intruder"])
def test_material_passwords_are_private_files(tmp_path: Path, user: str) -> None:
    material = secure.prepare_material(tmp_path, "127.0.0.1", (user,))
    assert material.password_file(user).stat().st_mode & 0o777 == 0o600
    assert material.admin_config.stat().st_mode & 0o777 == 0o600
    assert material.keystore.exists() and material.ca_file.read_text().startswith("-----BEGIN CERTIFICATE")
    context = ssl.create_default_context(cafile=str(material.ca_file))  # clients can load it
    assert context.cert_store_stats()["x509_ca"] == 1
    first = material.password(user)
    assert secure.prepare_material(tmp_path, "127.0.0.1", (user,)).password(user) == first  # kept


def test_no_password_on_a_command_line_of_the_secure_dev_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """keytool and StorageTool run for real / as built: every argv is free of every password."""
    import subprocess

    from streamapp.dev import kafka as dev_kafka

    real_run = subprocess.run
    calls: list[list[str]] = []
    argfiles: dict[str, tuple[int, str]] = {}

    def recording_run(cmd: list[str], *args: object, **kwargs: object) -> object:
        calls.append(list(cmd))
        for arg in cmd:
            if arg.startswith("@"):  # a java argfile: what the launcher will read, and its mode
                path = Path(arg[1:])
                argfiles[arg] = (path.stat().st_mode & 0o777, path.read_text())
        if cmd[0] == "java":  # formatting needs Kafka's jars; what matters here is the command
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return real_run(cmd, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(subprocess, "run", recording_run)
    material = secure.prepare_material(tmp_path, "127.0.0.1", ("streamapp",))
    broker = DevBroker(home=tmp_path, port=1, controller_port=2, secure=True, secure_port=3)
    broker.material = material
    broker.state_dir.mkdir(parents=True, exist_ok=True)
    broker._format(tmp_path)
    passwords = [material.keystore_password, *(material.password(u) for u in material.users)]
    assert [c[0] for c in calls] == ["keytool", "keytool", "java"]
    for cmd in calls:
        for password in passwords:
            assert not any(password in arg for arg in cmd), cmd
    assert all("-storepass:file" in cmd for cmd in calls[:2])
    ((mode, text),) = argfiles.values()
    assert mode == 0o600 and "kafka.tools.StorageTool" in text
    assert all(f"password={material.password(u)}]" in text for u in material.users)
    assert not (broker.state_dir / "format.args").exists(), "the argfile is removed after use"
    assert material.keystore.stat().st_mode & 0o777 == 0o600  # private from creation (umask 077)
    assert dev_kafka.secure_setup is secure


def test_secret_files_are_private_before_the_first_byte(tmp_path: Path) -> None:
    loose = tmp_path / "old.password"
    loose.write_text("old\n")
    loose.chmod(0o644)
    secure.write_secret(loose, "new\n")  # an existing world-readable file is closed first
    assert loose.stat().st_mode & 0o777 == 0o600 and loose.read_text() == "new\n"
    fresh = tmp_path / "fresh.password"
    secure.write_secret(fresh, "x\n")
    assert fresh.stat().st_mode & 0o777 == 0o600
