"""The local stack's SASL_SSL listener (`tutti stack up --secure`): what a secured production
cluster looks like to Tutti's clients, on this machine.

- TLS: a throw-away certificate authority and a broker certificate for ``localhost`` and
  ``127.0.0.1``, made at the first secure start with the JDK's ``keytool`` (no openssl needed);
  clients trust ``ca.pem``, so hostname verification stays on.
- SASL: one user (``stack.secure_user``) with a random password kept in a file (0600), known to
  the broker for SCRAM-SHA-256, SCRAM-SHA-512 (created with the broker's own
  ``kafka-configs`` tool, ``kafka.admin.ConfigCommand``) and PLAIN (the listener's JAAS entry).

Everything lives in ``<state_dir>/secure`` and goes away with `tutti stack reset`. The PLAINTEXT
listener stays for the broker's own tools and the registry's readiness checks.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Sequence
from pathlib import Path

from orchestrator.errors import StackError

__all__ = ["SecureMaterial"]

_VALIDITY_DAYS = "825"
_SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


class SecureMaterial:
    """Certificates and passwords of the secure listener, under ``home``."""

    def __init__(self, home: Path, user: str) -> None:
        self.home = home
        self.user = user
        self.ca_pem = home / "ca.pem"
        self.keystore = home / "broker.p12"
        self.password_file = home / f"{user}.password"
        self._store_password_file = home / "keystore.password"
        self._users_marker = home / "scram-users"

    def exists(self) -> bool:
        return self.keystore.exists() and self.ca_pem.exists() and self.password_file.exists()

    def password(self) -> str:
        return self.password_file.read_text().strip()

    def ensure(self, keytool: str) -> None:
        """Make the CA, the broker's keystore and the user's password, unless made already."""
        if self.exists():
            return
        self.home.mkdir(parents=True, exist_ok=True)
        for path in self.home.iterdir():  # a half-made set from an interrupted start
            path.unlink()
        store = _secret_file(self._store_password_file)
        _secret_file(self.password_file)
        ca_store = self.home / "ca.p12"
        csr, signed = self.home / "broker.csr", self.home / "broker.pem"
        common = ["-storetype", "PKCS12", "-storepass", store, "-keypass", store]
        _keytool(keytool, "-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048",
                 "-dname", "CN=Tutti local stack CA", "-ext", "bc:c", "-validity", _VALIDITY_DAYS,
                 "-keystore", str(ca_store), *common)  # fmt: skip
        _keytool(keytool, "-exportcert", "-rfc", "-alias", "ca", "-keystore", str(ca_store),
                 "-storepass", store, "-file", str(self.ca_pem))  # fmt: skip
        _keytool(keytool, "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
                 "-dname", "CN=localhost", "-validity", _VALIDITY_DAYS,
                 "-keystore", str(self.keystore), *common)  # fmt: skip
        _keytool(keytool, "-certreq", "-alias", "broker", "-keystore", str(self.keystore),
                 "-storepass", store, "-file", str(csr))  # fmt: skip
        _keytool(keytool, "-gencert", "-alias", "ca", "-keystore", str(ca_store),
                 "-storepass", store, "-infile", str(csr), "-outfile", str(signed), "-rfc",
                 "-validity", _VALIDITY_DAYS, "-ext", "SAN=dns:localhost,ip:127.0.0.1",
                 "-ext", "EKU=serverAuth,clientAuth")  # fmt: skip
        _keytool(keytool, "-importcert", "-noprompt", "-alias", "ca", "-file", str(self.ca_pem),
                 "-keystore", str(self.keystore), "-storepass", store)  # fmt: skip
        _keytool(keytool, "-importcert", "-noprompt", "-alias", "broker", "-file", str(signed),
                 "-keystore", str(self.keystore), "-storepass", store)  # fmt: skip
        csr.unlink()

    def broker_properties(self, port: int) -> dict[str, str]:
        """The listener's part of server.properties."""
        store = self._store_password_file.read_text().strip()
        plain = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_{self.user}="{self.password()}";'
        )
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return {
            "sasl.enabled.mechanisms": ",".join(("PLAIN", *_SCRAM_MECHANISMS)),
            "listener.name.sasl_ssl.plain.sasl.jaas.config": plain,
            "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": scram,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.keystore),
            "ssl.keystore.password": store,
            "ssl.key.password": store,
        }

    def create_users(self, java_cmd: Sequence[str], bootstrap: str) -> bool:
        """Give the user SCRAM credentials on the running broker, once per data set (they are
        stored in the cluster metadata). True when they were created now."""
        if self._users_marker.exists():
            return False
        password = self.password()
        # One mechanism per call: the broker refuses two changes to a user in one request.
        for mechanism in _SCRAM_MECHANISMS:
            proc = subprocess.run(
                [*java_cmd, "kafka.admin.ConfigCommand", "--bootstrap-server", bootstrap,
                 "--alter", "--add-config", f"{mechanism}=[password={password}]",
                 "--entity-type", "users", "--entity-name", self.user],
                capture_output=True,
                text=True,
            )  # fmt: skip
            if proc.returncode != 0:
                out = (proc.stdout + proc.stderr).replace(password, "***")
                raise StackError(f"creating the {mechanism} user {self.user!r} failed:\n{out}")
        self._users_marker.write_text(f"{self.user}\n")
        return True

    def client_env(self, bootstrap: str, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
        """The settings a client needs for the listener (the password by file, never inline)."""
        return {
            "TUTTI_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TUTTI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "TUTTI_KAFKA_SASL_MECHANISM": mechanism,
            "TUTTI_KAFKA_SASL_USERNAME": self.user,
            "TUTTI_KAFKA_SASL_PASSWORD_FILE": str(self.password_file),
            "TUTTI_KAFKA_SSL_CA_FILE": str(self.ca_pem),
        }


def _secret_file(path: Path) -> str:
    value = secrets.token_urlsafe(18)  # letters, digits, '-', '_': safe in every config syntax
    path.touch(mode=0o600)
    path.write_text(f"{value}\n")
    return value


def _keytool(keytool: str, *args: str) -> None:
    proc = subprocess.run([keytool, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise StackError(f"keytool {args[0]} failed:\n{proc.stdout}{proc.stderr}")
