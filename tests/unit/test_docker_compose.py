"""docker-compose.yml and the Dockerfile agree with each other, the CLI and the settings."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import click
import pytest
import yaml

from streamapp.cli import main
from streamapp.dev.registry import APICURIO_VERSION, CCOMPAT_PATH
from streamapp.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
WEB_HOST = "worker-0a1b2c3d4e5f"  # what a replica's container host name looks like


# -- helpers --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    assert isinstance(compose.get("services"), dict), "no services"
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def _last(dockerfile: list[tuple[str, str]], keyword: str) -> str | None:
    found = [args for key, args in dockerfile if key == keyword]
    return found[-1] if found else None


def _exec_form(dockerfile: list[tuple[str, str]], keyword: str) -> list[str]:
    args = _last(dockerfile, keyword)
    assert args is not None, f"Dockerfile has no {keyword}"
    value = json.loads(args)  # exec (JSON) form: no shell in between, signals reach the process
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): _env_text(v) for k, v in env.items()}


def _env_text(value: Any) -> str:
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    return shlex.split(command) if isinstance(command, str) else list(command or [])


def _ports(service: dict[str, Any]) -> list[tuple[str | None, str]]:
    """(published host port or None, container port) for every entry of ``ports``."""
    result: list[tuple[str | None, str]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            published = entry.get("published")
            result.append((None if published is None else str(published), str(entry["target"])))
            continue
        spec = str(entry).split("/", 1)[0]
        parts = spec.rsplit(":", 2) if spec.count(":") >= 2 else spec.split(":")
        if len(parts) == 1:
            result.append((None, parts[0]))
        else:
            result.append((parts[-2] or None, parts[-1]))
    return result


def _built_here(service: dict[str, Any]) -> bool:
    build = service.get("build")
    if build is None:
        return False
    if isinstance(build, str):
        context, dockerfile = build, "Dockerfile"
    else:
        context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
    return (ROOT / context).resolve() == ROOT and dockerfile == DOCKERFILE.name


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` as {NAME: (host, port)}."""
    result = {}
    for item in value.split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        result[name] = (host, int(port))
    return result


def _run_entrypoint(entrypoint: list[str], env: dict[str, str], *command: str) -> str:
    if shutil.which(entrypoint[0]) is None:
        pytest.skip(f"{entrypoint[0]} is not here to run the entrypoint with")
    result = subprocess.run(
        [*entrypoint, *command], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    return result.stdout.strip()


def _web_host_after_entrypoint(dockerfile: list[tuple[str, str]], env: dict[str, str]) -> str:
    """Run the image's ENTRYPOINT here (a POSIX shell line) and report STREAMAPP_WEB_HOST."""
    probe = (sys.executable, "-c", "import os; print(os.environ.get('STREAMAPP_WEB_HOST', ''))")
    return _run_entrypoint(_exec_form(dockerfile, "ENTRYPOINT"), env, *probe)


# -- compose file ---------------------------------------------------------------------------
def test_services_are_named(services: dict[str, dict[str, Any]]) -> None:
    assert {"kafka", "worker", "generator", "prometheus", "grafana", "schema-registry"} <= set(services)


def test_kafka_is_apache_kafka_4_in_kraft_mode(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    assert str(kafka.get("image", "")).startswith("apache/kafka:4."), kafka.get("image")
    env = _environment(kafka)
    assert sorted(env["KAFKA_PROCESS_ROLES"].split(",")) == ["broker", "controller"]
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    node_id = env["KAFKA_NODE_ID"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert [v.split("@", 1)[0] for v in voters] == [node_id], voters
    for name in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env.get(name) == "1", f"{name} must be 1 on a single broker"
    assert env.get("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS") == "0"
    assert env.get("KAFKA_NUM_PARTITIONS") == str(Settings().partitions)


def test_kafka_listeners_are_consistent(services: dict[str, dict[str, Any]]) -> None:
    env = _environment(services["kafka"])
    listeners = _listeners(env["KAFKA_LISTENERS"])
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocol_map = env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    protocols = dict(p.split(":", 1) for p in protocol_map.split(","))
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert set(listeners) <= set(protocols), "a listener has no security protocol"
    assert controller in listeners and controller not in advertised
    assert set(advertised) <= set(listeners)
    for name, (_, port) in advertised.items():
        assert listeners[name][1] == port, f"{name} advertises a port it does not listen on"
    # containers reach the broker as kafka:9092, the host as localhost:29092
    assert ("kafka", 9092) in advertised.values()
    assert ("localhost", 29092) in advertised.values()
    voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@", 1)[1]
    voter_host, _, voter_port = voter.rpartition(":")
    assert int(voter_port) == listeners[controller][1]
    assert voter_host in ("kafka", services["kafka"].get("hostname"))


def test_kafka_publishes_29092_and_keeps_data(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    kafka = services["kafka"]
    assert ("29092", "29092") in _ports(kafka)
    env = _environment(kafka)
    log_dir = env["KAFKA_LOG_DIRS"]
    named = {}  # named volume -> mount point ("name:/path[:mode]"; bind mounts start with / . ~)
    for volume in kafka.get("volumes", []):
        source, _, rest = str(volume).partition(":")
        if rest and not source.startswith(("/", ".", "~")):
            named[source] = rest.split(":", 1)[0]
    assert log_dir in named.values(), "KAFKA_LOG_DIRS is not on a named volume"
    assert set(named) <= set(compose.get("volumes") or {}), "named volume not declared"
    test = kafka["healthcheck"]["test"]
    joined = " ".join(test) if isinstance(test, list) else test
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in joined
    assert "--bootstrap-server" in joined


def test_worker_scales(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker, "container_name breaks --scale"
    assert "hostname" not in worker, "a fixed hostname makes every replica advertise the same name"
    ports = _ports(worker)
    assert ports, "worker publishes no port"
    for published, target in ports:
        assert published is None, f"fixed host port {published} breaks --scale"
        assert target == "6066"
    deploy = worker.get("deploy") or {}
    assert deploy.get("replicas", 1) >= 1


def test_worker_keeps_state_in_its_own_volume(
    services: dict[str, dict[str, Any]], dockerfile: list[tuple[str, str]]
) -> None:
    worker = services["worker"]
    data_dir = _environment(worker)["STREAMAPP_DATA_DIR"]
    assert data_dir == "/data"
    # anonymous (per container) volume: a bare container path, no source
    assert data_dir in worker.get("volumes", [])
    assert data_dir in json.loads(_last(dockerfile, "VOLUME") or "[]")


def test_services_wait_for_a_healthy_broker(services: dict[str, dict[str, Any]]) -> None:
    assert "healthcheck" in services["kafka"]
    for name in ("worker", "generator"):
        depends = services[name].get("depends_on")
        assert isinstance(depends, dict), f"{name}: depends_on needs the long form"
        assert depends["kafka"]["condition"] == "service_healthy", name


def test_streamapp_services_are_built_from_the_dockerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("worker", "generator"):
        assert _built_here(services[name]), f"{name} is not built from {DOCKERFILE.name}"


def test_commands_are_real_cli_commands(services: dict[str, dict[str, Any]]) -> None:
    checked = []
    for name, service in services.items():
        if not _built_here(service):
            continue
        command = _command(service)
        assert command[:1] == ["streamapp"], f"{name}: {command}"
        sub, *args = command[1:]
        assert sub in main.commands, f"{name}: `streamapp {sub}` does not exist"
        # parse the options for real: an unknown option or a bad value raises
        with click.Context(main, info_name="streamapp") as parent:
            main.commands[sub].make_context(sub, list(args), parent=parent)
        checked.append(name)
    assert {"worker", "generator"} <= set(checked)
    assert _command(services["worker"]) == ["streamapp", "worker"]
    assert _command(services["generator"])[:2] == ["streamapp", "generate"]


def test_streamapp_settings_load(
    services: dict[str, dict[str, Any]], dockerfile: list[tuple[str, str]]
) -> None:
    found = set()
    for name, service in services.items():
        env = {k: v for k, v in _environment(service).items() if k.startswith("STREAMAPP_")}
        if not env:
            continue
        found.add(name)
        env.setdefault("STREAMAPP_WEB_HOST", WEB_HOST)
        settings = load_settings(env)  # raises SettingsError naming a bad variable
        if not _built_here(service):
            continue
        assert settings.bootstrap_servers == ["kafka:9092"], name
    assert {"worker", "generator"} <= found
    worker_env = _environment(services["worker"])
    assert "STREAMAPP_WEB_HOST" not in worker_env or not worker_env["STREAMAPP_WEB_HOST"], (
        "a fixed STREAMAPP_WEB_HOST makes every replica advertise the same name"
    )


def test_workers_reach_the_broker_on_its_internal_listener(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka_env = _environment(services["kafka"])
    advertised = _listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    for name in ("worker", "generator"):
        settings = load_settings(_environment(services[name]))
        for server in settings.bootstrap_servers:
            host, _, port = server.rpartition(":")
            assert host == "kafka" and (host, int(port)) in advertised.values(), (name, server)


# -- schema registry ------------------------------------------------------------------------
def test_schema_registry_is_apicurio_3_in_memory_with_a_small_heap(
    services: dict[str, dict[str, Any]],
) -> None:
    registry = services["schema-registry"]
    image, _, tag = str(registry["image"]).partition(":")
    assert image == "apicurio/apicurio-registry"  # the official image; 3.x replaced the -mem one
    assert tag == APICURIO_VERSION, "compose runs the release `streamapp registry up` runs"
    env = _environment(registry)
    assert env.get("APICURIO_STORAGE_KIND", "sql") == "sql"
    assert env.get("APICURIO_STORAGE_SQL_KIND", "h2") == "h2"  # H2 in memory: nothing on disk
    assert not registry.get("volumes"), "an in-memory registry needs no volume"
    heap = re.search(r"-Xmx(\d+)m", env.get("JAVA_OPTS_APPEND", ""))
    assert heap is not None and int(heap.group(1)) <= 512, "the registry's heap must stay small"
    assert ("8081", "8080") in _ports(registry)  # Apicurio listens on 8080 in the container
    test = registry["healthcheck"]["test"]
    joined = " ".join(test) if isinstance(test, list) else test
    assert f"localhost:8080{CCOMPAT_PATH}/" in joined


def test_workers_reach_the_registry_by_its_service_name(services: dict[str, dict[str, Any]]) -> None:
    registry = services["schema-registry"]
    container_ports = {target for _, target in _ports(registry)}
    worker = services["worker"]
    settings = load_settings(_environment(worker))
    assert settings.schema_registry_url is not None, "workers must know where the registry is"
    url = urlparse(settings.schema_registry_url)
    assert url.hostname in ("schema-registry", registry.get("hostname"))
    assert str(url.port) in container_ports, "workers talk to the container port, not the host one"
    assert url.path == CCOMPAT_PATH
    depends = worker["depends_on"]
    assert depends["schema-registry"]["condition"] in ("service_started", "service_healthy")
    assert depends["kafka"]["condition"] == "service_healthy"


# -- Dockerfile -----------------------------------------------------------------------------
def test_dockerfile_base_and_user(dockerfile: list[tuple[str, str]]) -> None:
    assert dockerfile[0][0] == "FROM"
    assert dockerfile[0][1].split()[0] == "python:3.11-slim"
    user = _last(dockerfile, "USER")
    assert user and user.split(":")[0] not in ("root", "0"), "the image must not run as root"
    assert any(key == "RUN" and "pip install ." in args for key, args in dockerfile)


def test_dockerfile_copies_every_package(dockerfile: list[tuple[str, str]]) -> None:
    """pyproject's package patterns match only directories the Dockerfile copies."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = set()
    for key, args in dockerfile:
        if key in ("COPY", "ADD"):
            sources = [a for a in shlex.split(args) if not a.startswith("--")][:-1]
            copied.update(s.rstrip("/") for s in sources)
    assert "pyproject.toml" in copied
    readme = pyproject["project"].get("readme")
    if isinstance(readme, str):  # setuptools reads it while building
        assert readme in copied, f"{readme} (pyproject's readme) is not copied"
    packages = {
        path.name
        for path in ROOT.iterdir()
        if (path / "__init__.py").is_file() and any(fnmatch(path.name, p) for p in patterns)
    }
    assert packages, "no package found"
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"


def test_dockerfile_expose_matches_compose(
    services: dict[str, dict[str, Any]], dockerfile: list[tuple[str, str]]
) -> None:
    exposed = {p.split("/")[0] for key, args in dockerfile if key == "EXPOSE" for p in args.split()}
    worker_port = load_settings(_environment(services["worker"])).web_port
    assert exposed == {str(worker_port)}
    assert {target for _, target in _ports(services["worker"])} == exposed


def test_dockerfile_cmd_is_the_compose_worker(
    services: dict[str, dict[str, Any]], dockerfile: list[tuple[str, str]]
) -> None:
    cmd = _exec_form(dockerfile, "CMD")
    assert cmd == _command(services["worker"]) == ["streamapp", "worker"]
    assert cmd[1] in main.commands


def test_entrypoint_advertises_the_container_host_name(dockerfile: list[tuple[str, str]]) -> None:
    entrypoint = _exec_form(dockerfile, "ENTRYPOINT")
    assert entrypoint[:2] in (["/bin/sh", "-c"], ["sh", "-c"]), entrypoint
    assert re.search(r'exec "\$@"', entrypoint[2]), "the entrypoint must exec the command"
    env = {"PATH": "/usr/bin:/bin", "HOSTNAME": WEB_HOST}
    assert _web_host_after_entrypoint(dockerfile, env) == WEB_HOST
    # an explicit setting wins
    env["STREAMAPP_WEB_HOST"] = "worker.example"
    assert _web_host_after_entrypoint(dockerfile, env) == "worker.example"
    # the command runs with its arguments intact, and its exit status comes through
    args = ("a b", "--c=$HOME", "")
    echoed = _run_entrypoint(
        entrypoint,
        env,
        sys.executable,
        "-c",
        "import sys, json; print(json.dumps(sys.argv[1:]))",
        *args,
    )
    assert json.loads(echoed) == list(args)
    with pytest.raises(subprocess.CalledProcessError):
        _run_entrypoint(entrypoint, env, sys.executable, "-c", "raise SystemExit(3)")


def test_entrypoint_host_makes_the_worker_reachable(
    services: dict[str, dict[str, Any]], dockerfile: list[tuple[str, str]]
) -> None:
    """The worker env plus what the entrypoint adds: a web host others can reach, on 6066."""
    env = {"PATH": "/usr/bin:/bin", "HOSTNAME": WEB_HOST, **_environment(services["worker"])}
    env["STREAMAPP_WEB_HOST"] = _web_host_after_entrypoint(dockerfile, env)
    settings = load_settings(env)
    assert settings.web_host == WEB_HOST
    assert settings.web_host != "127.0.0.1"  # so the app binds 0.0.0.0 (streamapp/app.py)
    assert settings.data_dir == Path("/data")


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = {
        line.strip().strip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".venv", ".git", "data", "test-artifacts"):
        assert needed in patterns, f".dockerignore does not exclude {needed}"
    assert not {"streamapp", "agents", "tables", "pyproject.toml"} & patterns


# -- Prometheus and Grafana -----------------------------------------------------------------
def _bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """{container path: host path} for every bind mount (``./host:/container[:mode]``)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, _, rest = str(volume).partition(":")
        if rest and source.startswith((".", "/")):
            mounts[rest.split(":", 1)[0]] = (ROOT / source).resolve()
    return mounts


def _flag(command: list[str], name: str) -> str | None:
    found = [arg.split("=", 1)[1] for arg in command if arg.startswith(f"--{name}=")]
    return found[-1] if found else None


def test_prometheus_scrapes_every_worker_replica(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    assert str(prometheus.get("image", "")).startswith("prom/prometheus:v2."), prometheus.get("image")
    assert ("9090", "9090") in _ports(prometheus)
    config_path = _flag(_command(prometheus), "config.file")
    assert config_path is not None
    host_config = _bind_mounts(prometheus)[config_path]
    assert host_config == ROOT / "ops" / "prometheus" / "prometheus.yml"
    config = yaml.safe_load(host_config.read_text(encoding="utf-8"))
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "streamapp"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    # one A record per replica: `--scale worker=N` gets every worker scraped
    (dns,) = job["dns_sd_configs"]
    worker_port = load_settings(_environment(services["worker"])).web_port
    assert dns["names"] == ["worker"] and dns["type"] == "A" and dns["port"] == worker_port
    assert shutil.which("promtool"), "promtool missing: `make deps` (apt-get install prometheus)"
    check = subprocess.run(["promtool", "check", "config", str(host_config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(
    services: dict[str, dict[str, Any]],
) -> None:
    grafana = services["grafana"]
    assert str(grafana.get("image", "")).startswith("grafana/grafana:"), grafana.get("image")
    assert ("3000", "3000") in _ports(grafana)
    env = _environment(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    mounts = _bind_mounts(grafana)
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == ROOT / "ops" / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "streamapp.yml").read_text())["providers"]
    dashboards = mounts[provider["options"]["path"]]
    assert dashboards == ROOT / "ops" / "grafana" / "dashboards"
    dashboard = json.loads((dashboards / "streamapp.json").read_text(encoding="utf-8"))
    uids = {
        panel["datasource"]["uid"] for panel in dashboard["panels"] if panel.get("datasource") is not None
    }
    assert uids == {source["uid"]}, "every panel must use the provisioned data source"
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/") and (dashboards / Path(home).name).is_file()
    assert "prometheus" in (grafana.get("depends_on") or {})


# -- the secure overlay (docker-compose.secure.yml) -----------------------------------------
SECURE_FILE = ROOT / "docker-compose.secure.yml"
_SECRETS = {
    "STREAMAPP_SASL_PASSWORD": "sasl-pw", "KAFKA_KEYSTORE_PASSWORD": "ks-pw",
    "STREAMAPP_WEB_TOKEN": "tok-0123456789abcdef", "STREAMAPP_GENERATOR_SASL_PASSWORD": "gen-pw",
}  # fmt: skip


class _Override(list):  # type: ignore[type-arg]
    """A sequence tagged ``!override`` in an override file: it replaces the base's, not appends."""


class _ComposeLoader(yaml.SafeLoader):
    """yaml's safe loader plus compose's ``!override`` tag (compose 2.24.4 and later)."""


_ComposeLoader.add_constructor(
    "!override",
    lambda loader, node: _Override(loader.construct_sequence(node)),  # type: ignore[arg-type]
)


def _merge(base: Any, over: Any) -> Any:
    """Compose's merge of an override file: mappings merge key by key, sequences append
    (``!override`` sequences replace)."""
    if isinstance(over, _Override):
        return list(over)
    if isinstance(base, dict) and isinstance(over, dict):
        return {k: _merge(base[k], v) if k in base else v for k, v in {**base, **over}.items()}
    if isinstance(base, list) and isinstance(over, list):
        return base + [item for item in over if item not in base]
    return over


def _interpolate(value: str, env: dict[str, str]) -> str:
    """``${NAME}``, ``${NAME:?message}`` from ``env`` (a missing one fails like compose); ``$$`` is ``$``."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in env, f"${{{name}}} is not set: compose would refuse to start"
        return env[name]

    return re.sub(r"\$\{(\w+)(?::\?[^}]*)?\}", one, value).replace("$$", "$")


@pytest.fixture(scope="module")
def secure_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    overlay = yaml.load(SECURE_FILE.read_text(encoding="utf-8"), Loader=_ComposeLoader)
    merged = _merge(compose, overlay)
    assert set(overlay.get("volumes") or {}) <= set(merged["volumes"])
    return merged["services"]


def test_secure_overlay_kafka_listens_with_sasl_ssl_and_authorizes(
    secure_services: dict[str, dict[str, Any]],
) -> None:
    env = {k: _interpolate(v, _SECRETS) for k, v in _environment(secure_services["kafka"]).items()}
    listeners = _listeners(env["KAFKA_LISTENERS"])
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(p.split(":", 1) for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols) and set(advertised) <= set(listeners)
    for name, (_, port) in advertised.items():
        assert listeners[name][1] == port
    assert protocols["SASL_SSL"] == "SASL_SSL" and ("kafka", 9094) == advertised["SASL_SSL"]
    # the port published to the host is SASL_SSL too: nothing PLAINTEXT leaves the network
    published = {int(target) for host, target in _ports(secure_services["kafka"]) if host}
    for name, (_, port) in listeners.items():
        if port in published:
            assert protocols[name] == "SASL_SSL", f"{name} on published port {port} is {protocols[name]}"
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    for name in listeners:
        if protocols[name] == "SASL_SSL":
            key = f"KAFKA_LISTENER_NAME_{name.replace('_', '__')}_SCRAM___SHA___512_SASL_JAAS_CONFIG"
            assert "ScramLoginModule" in env[key], key
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert "User:streamapp" not in env["KAFKA_SUPER_USERS"]
    assert env["KAFKA_SSL_KEYSTORE_TYPE"] == "PKCS12" and env["KAFKA_SSL_KEYSTORE_PASSWORD"] == "ks-pw"
    keystore_dir = str(Path(env["KAFKA_SSL_KEYSTORE_LOCATION"]).parent)
    assert any(str(v).split(":")[1:2] == [keystore_dir] for v in secure_services["kafka"]["volumes"])
    assert secure_services["kafka"]["depends_on"]["certs"]["condition"] == "service_completed_successfully"
    certs = " ".join(_command(secure_services["certs"]))
    assert "keytool -genkeypair" in certs and "PKCS12" in certs and "-exportcert -rfc" in certs
    assert "dns:kafka" in certs and "dns:localhost" in certs


def test_secure_overlay_setup_creates_the_user_and_its_acls(
    secure_services: dict[str, dict[str, Any]],
) -> None:
    setup = secure_services["kafka-setup"]
    script = " ".join(_command(setup))
    assert "--entity-type users --entity-name streamapp " in script and "SCRAM-SHA-512=" in script
    assert "$$STREAMAPP_SASL_PASSWORD" in script, "the password comes from the environment, not the file"
    assert "--resource-pattern-type prefixed" in script
    for option in ("--topic streamapp", "--group streamapp", "--transactional-id streamapp"):
        assert option in script
    from streamapp.dev.secure import app_topic_names

    for topic in app_topic_names(""):
        assert f"--topic {topic}" in script
    assert setup["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_secure_overlay_clients_use_sasl_ssl(
    secure_services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    kafka_env = _environment(secure_services["kafka"])
    advertised = _listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    cafile = tmp_path / "ca.pem"
    cafile.write_text("not read here\n")
    for name, user, password in (
        ("worker", "streamapp", "sasl-pw"),
        ("generator", "streamapp-generator", "gen-pw"),
    ):
        service = secure_services[name]
        env = {k: _interpolate(v, _SECRETS) for k, v in _environment(service).items()}
        assert env["STREAMAPP_SSL_CAFILE"] == "/certs/ca.pem"
        assert any(str(v).split(":")[1:2] == ["/certs"] for v in service["volumes"]), name
        settings = load_settings({**env, "STREAMAPP_SSL_CAFILE": str(cafile), "STREAMAPP_WEB_HOST": WEB_HOST})
        assert settings.security_protocol == "SASL_SSL" and settings.sasl_mechanism == "SCRAM-SHA-512"
        assert settings.sasl_username == user
        assert settings.sasl_password == password  # from the environment, never written in the file
        (server,) = settings.bootstrap_servers
        host, _, port = server.rpartition(":")
        assert advertised["SASL_SSL"] == (host, int(port)), name
        assert service["depends_on"]["kafka-setup"]["condition"] == "service_completed_successfully"
    assert load_settings(
        {**_environment(secure_services["worker"]), "STREAMAPP_SSL_CAFILE": str(cafile),
         **{k: v for k, v in _SECRETS.items() if k.startswith("STREAMAPP")}}
    ).web_token == "tok-0123456789abcdef"  # fmt: skip
    # the health check stays on an open path
    assert "/live" in " ".join(secure_services["worker"]["healthcheck"]["test"])


def _commands(script: str) -> list[list[str]]:
    """The simple commands of a ``sh -c`` script joined with ``&&`` / ``;`` (enough for ours)."""
    return [shlex.split(part) for part in re.split(r"&&|;", script) if part.strip()]


def _secret_references(words: list[str]) -> list[str]:
    names = [*_SECRETS, "KEYSTORE_PASSWORD"]
    return [w for w in words for n in names if f"$${n}" in w or f"${{{n}" in w or f"${n}" in w]


def test_worker_health_check_is_liveness_on_an_open_path(services: dict[str, dict[str, Any]]) -> None:
    from streamapp.web.auth import OPEN_PATHS

    test = services["worker"]["healthcheck"]["test"]
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", " ".join(test))
    assert url is not None, test
    assert int(url.group(1)) == load_settings(_environment(services["worker"])).web_port
    # /live fails when an owned partition stalls; it needs no token, or the check would fail always
    assert url.group(2) == "/live" and "/live" in OPEN_PATHS


def test_secure_overlay_puts_no_secret_on_a_command_line(
    secure_services: dict[str, dict[str, Any]],
) -> None:
    """``ps`` shows every process's arguments to every user: secrets go by environment or file."""
    seen = 0
    for name, service in secure_services.items():
        command = _command(service)
        if command[:2] != ["sh", "-c"]:
            assert not _secret_references(command), name
            continue
        for words in _commands(command[2]):
            if _secret_references(words):
                seen += 1
                # printf is a builtin of every POSIX shell: no process, no command line
                assert words[0] == "printf", (name, words)
                assert words[-2] == ">" and words[-1].startswith("/tmp/"), (name, words)
    assert seen == 2  # the two SCRAM passwords
    setup = _command(secure_services["kafka-setup"])[2]
    assert setup.index("umask 077") < setup.index("printf"), "the password files must be private"
    # the file form of --add-config takes no brackets: SCRAM-SHA-512=password=... (checked on Kafka)
    assert "SCRAM-SHA-512=password=%s" in setup and "[password" not in setup
    assert (
        setup.count("--add-config-file") == 2 and "rm -f /tmp/streamapp.scram /tmp/generator.scram" in setup
    )
    certs = _command(secure_services["certs"])[2]
    assert certs.count("-storepass:env KEYSTORE_PASSWORD") == 2 and "-storepass " not in certs


def test_secure_overlay_generator_may_only_write_the_input_topics(
    secure_services: dict[str, dict[str, Any]],
) -> None:
    from streamapp.dev.secure import GENERATOR_USER, INPUT_TOPICS, generator_acl_commands

    env = _environment(secure_services["generator"])
    assert (
        env["STREAMAPP_SASL_USERNAME"]
        == GENERATOR_USER
        != _environment(secure_services["worker"])["STREAMAPP_SASL_USERNAME"]
    )
    acls = [
        words for words in _commands(_command(secure_services["kafka-setup"])[2])
        if words[0].endswith("kafka-acls.sh") and f"User:{GENERATOR_USER}" in words
    ]  # fmt: skip
    (acl,) = acls
    assert acl[acl.index("--operation") + 1] == "Write" and acl.count("--operation") == 1
    assert acl[acl.index("--resource-pattern-type") + 1] == "literal"
    topics = [acl[i + 1] for i, word in enumerate(acl) if word == "--topic"]
    assert topics == list(INPUT_TOPICS)
    assert not {"--group", "--transactional-id", "--cluster"} & set(acl)
    # the dev broker grants the same
    (dev,) = generator_acl_commands(GENERATOR_USER)
    assert [dev[i + 1] for i, word in enumerate(dev) if word == "--topic"] == topics
    assert dev[dev.index("--operation") + 1] == "Write"


def test_secure_overlay_binds_registry_databases_and_dashboards_to_localhost(
    compose: dict[str, Any], secure_services: dict[str, dict[str, Any]]
) -> None:
    for name in ("schema-registry", "postgres", "influxdb", "prometheus", "grafana"):
        entries = [str(entry) for entry in secure_services[name].get("ports") or []]
        assert entries, name
        for entry in entries:
            assert entry.startswith("127.0.0.1:"), (name, entry)
        # the same ports as without the overlay, only on the loopback address
        assert _ports(secure_services[name]) == _ports(compose["services"][name]), name


# -- sinks ----------------------------------------------------------------------------------
def test_sink_databases_are_official_images_the_workers_write_to(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    postgres, influx = services["postgres"], services["influxdb"]
    assert str(postgres["image"]).split(":")[0] == "postgres"
    assert str(influx["image"]) == "influxdb:1.8"  # the 1.x HTTP API the sink speaks
    pg_env = _environment(postgres)
    settings = load_settings(_environment(services["worker"]))
    assert settings.postgres_dsn is not None and settings.influx_url is not None
    dsn = urlparse(settings.postgres_dsn)
    assert (dsn.hostname, dsn.port or 5432) == ("postgres", 5432)
    assert (dsn.username, dsn.password) == (pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"])
    assert dsn.path.strip("/") == pg_env["POSTGRES_DB"]
    influx_url = urlparse(settings.influx_url)
    assert (influx_url.hostname, influx_url.port) == ("influxdb", 8086)
    assert influx_url.path.strip("/") == _environment(influx)["INFLUXDB_DB"]
    for name in ("postgres", "influxdb"):
        assert name in services["worker"]["depends_on"], f"the worker does not start after {name}"
        assert "healthcheck" in services[name]
        for volume in services[name].get("volumes", []):
            source = str(volume).split(":", 1)[0]
            assert source in (compose.get("volumes") or {}), f"{name}: volume {source} not declared"
