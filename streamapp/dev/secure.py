"""The dev broker's SASL_SSL listener: self-signed certificate, SCRAM users and the app's ACLs."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ADMIN_USER",
    "APP_USER",
    "GENERATOR_USER",
    "INPUT_TOPICS",
    "SCRAM_MECHANISM",
    "SecureMaterial",
    "SecureSetupError",
    "acl_commands",
    "app_topic_names",
    "generator_acl_commands",
    "grant",
    "prepare_material",
    "scram_arguments",
    "server_properties",
    "write_java_argfile",
    "write_secret",
]

ADMIN_USER = "admin"
APP_USER = "streamapp"
SCRAM_MECHANISM = "SCRAM-SHA-512"
GENERATOR_USER = "streamapp-generator"
#: the contract's input topics: all a traffic generator may write (before STREAMAPP_TOPIC_PREFIX)
INPUT_TOPICS = ("logins", "sensor-readings", "transactions", "stock-prices", "users")
#: the contract topics the app reads and writes (before STREAMAPP_TOPIC_PREFIX)
_CONTRACT_TOPICS = (*INPUT_TOPICS, "alerts", "dead-letters")

logger = logging.getLogger(__name__)


class SecureSetupError(RuntimeError):
    """Generating the certificate or granting ACLs failed; the message says why."""


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner may read: mode 0600 before the first byte.

    A new file is created 0600; an existing one is made 0600 before it is truncated and written.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    os.ftruncate(fd, 0)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def write_java_argfile(path: Path, args: Sequence[str]) -> None:
    """A private ``java @argfile`` of ``args`` (main class and its arguments): the java launcher
    reads them from the file, so secrets among them never show on the process command line."""
    write_secret(path, "".join('"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"\n' for a in args))


@dataclass(frozen=True)
class SecureMaterial:
    """Files of the secure listener, all under ``<state dir>/secure``."""

    directory: Path
    users: tuple[str, ...]

    @property
    def keystore(self) -> Path:
        return self.directory / "broker.p12"

    @property
    def ca_file(self) -> Path:
        """The broker's self-signed certificate in PEM: clients trust it (``STREAMAPP_SSL_CAFILE``)."""
        return self.directory / "ca.pem"

    @property
    def admin_config(self) -> Path:
        """Client config of the admin super user for Kafka's command-line tools (SASL_SSL)."""
        return self.directory / "admin.properties"

    def password_file(self, user: str) -> Path:
        return self.directory / f"{user}.password"

    def password(self, user: str) -> str:
        return self.password_file(user).read_text().strip()

    @property
    def keystore_password_file(self) -> Path:
        return self.directory / "keystore.password"

    @property
    def keystore_password(self) -> str:
        return self.keystore_password_file.read_text().strip()


def prepare_material(state_dir: Path, host: str, users: Sequence[str]) -> SecureMaterial:
    """Create (once) the passwords, the PKCS12 keystore and its PEM certificate; reuse them after."""
    directory = state_dir / "secure"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)  # made by an older version, or under a umask that widened it
    material = SecureMaterial(directory, tuple(dict.fromkeys([ADMIN_USER, APP_USER, *users])))
    for name in ("keystore", *material.users):
        path = directory / f"{name}.password"
        if not path.exists():
            write_secret(path, secrets.token_urlsafe(24) + "\n")
    if not material.keystore.exists() or not material.ca_file.exists():
        material.keystore.unlink(missing_ok=True)
        _keytool(
            "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-validity", "3650",
            "-dname", "CN=streamapp dev broker", "-ext", f"SAN=dns:localhost,ip:{host}",
            "-ext", "BC:c=ca:true", "-keystore", str(material.keystore), "-storetype", "PKCS12",
            "-storepass:file", str(material.keystore_password_file),
        )  # fmt: skip
        _keytool(
            "-exportcert", "-rfc", "-alias", "broker", "-keystore", str(material.keystore),
            "-storetype", "PKCS12", "-storepass:file", str(material.keystore_password_file),
            "-file", str(material.ca_file),
        )  # fmt: skip
    write_secret(
        material.admin_config,
        "\n".join(
            [
                "security.protocol=SASL_SSL",
                f"sasl.mechanism={SCRAM_MECHANISM}",
                "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{ADMIN_USER}" password="{material.password(ADMIN_USER)}";',
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={material.ca_file}",
                "",
            ]
        ),
    )
    return material


def _keytool(*args: str) -> None:
    # passwords from files (-storepass:file), never argv; umask 077: the keystore is private from
    # creation
    proc = subprocess.run(["keytool", *args], capture_output=True, text=True, check=False, umask=0o077)
    if proc.returncode != 0:
        raise SecureSetupError(f"keytool {args[0]} failed: {proc.stdout}{proc.stderr}".strip())


def server_properties(material: SecureMaterial, host: str, port: int) -> list[str]:
    """Broker settings of the SASL_SSL listener, the authorizer and the super users."""
    return [
        f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
        "ssl.keystore.type=PKCS12",
        f"ssl.keystore.location={material.keystore}",
        f"ssl.keystore.password={material.keystore_password}",
        f"ssl.key.password={material.keystore_password}",
        "ssl.client.auth=none",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        # ANONYMOUS: the loopback PLAINTEXT and controller listeners (the broker itself and local tools)
        f"super.users=User:{ADMIN_USER};User:ANONYMOUS",
        "allow.everyone.if.no.acl.found=false",
    ]


def scram_arguments(material: SecureMaterial) -> list[str]:
    """``--add-scram`` arguments of ``StorageTool format``: every user with its password.

    They hold passwords: pass them in a :func:`write_java_argfile`, never on the command line.
    """
    args: list[str] = []
    for user in material.users:
        args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={material.password(user)}]"]
    return args


def app_topic_names(topic_prefix: str) -> list[str]:
    """The contract topics under ``topic_prefix``."""
    return [f"{topic_prefix}{name}" for name in _CONTRACT_TOPICS]


def acl_commands(user: str, app_id: str, topic_prefix: str = "") -> list[list[str]]:
    """AclCommand arguments that let ``user`` use exactly the app's topics, group and transactions.

    Prefixed on the app id: its internal topics (changelogs, repartitions), its consumer group and
    its transactional ids. The contract topics: prefixed on ``topic_prefix`` when there is one,
    else one literal ACL per topic.
    """
    principal = ["--add", "--allow-principal", f"User:{user}", "--operation", "All", "--force"]
    prefixed = [*principal, "--resource-pattern-type", "prefixed", "--topic", app_id, "--group", app_id,
                "--transactional-id", app_id]  # fmt: skip
    if topic_prefix:
        prefixed += ["--topic", topic_prefix]
        return [prefixed]
    literal = [*principal, "--resource-pattern-type", "literal"]
    for topic in app_topic_names(""):
        literal += ["--topic", topic]
    return [prefixed, literal]


def generator_acl_commands(user: str, topic_prefix: str = "") -> list[list[str]]:
    """AclCommand arguments that let ``user`` write the input topics and do nothing else."""
    command = ["--add", "--allow-principal", f"User:{user}", "--operation", "Write", "--force",
               "--resource-pattern-type", "literal"]  # fmt: skip
    for topic in INPUT_TOPICS:
        command += ["--topic", f"{topic_prefix}{topic}"]
    return [command]


def grant(
    libs: Path, log4j: Path, bootstrap: str, material: SecureMaterial, commands: Iterable[list[str]]
) -> None:
    """Run AclCommand as the admin super user over SASL_SSL (this also proves the listener works)."""
    for args in commands:
        cmd = [
            "java", "-Xmx256m", "-cp", f"{libs}/*", f"-Dlog4j2.configurationFile={log4j}",
            "org.apache.kafka.tools.AclCommand", "--bootstrap-server", bootstrap,
            "--command-config", str(material.admin_config), *args,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
        if proc.returncode != 0:
            raise SecureSetupError(f"granting ACLs failed: {proc.stdout}{proc.stderr}".strip())
        logger.debug("AclCommand %s: %s", args, proc.stdout)
