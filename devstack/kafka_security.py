"""The secured dev broker: TLS with a CA made here, SASL/SCRAM users, and the KRaft authorizer.

`DevStack(secure=True)` (or FLYWHEEL_KAFKA_SECURE=1 for `python -m devstack up`) runs the
local broker with one `SASL_SSL` listener (SCRAM-SHA-512), the StandardAuthorizer with
`allow.everyone.if.no.acl.found=false`, and `User:admin` as the only super user besides the
controller listener's principal. What each service's principal may do is then exactly what
`flywheel acls` grants (applied by the stack once the topics exist). Everything lives in
`<state>/kafka/security/` (mode 0700), made once and kept across restarts:

- `ca.pem`: a CA made at first start with the `cryptography` package (10 years), and the
  broker's certificate signed by it for `localhost` and `127.0.0.1` (PEM: the broker reads
  it inline as `ssl.keystore.type=PEM`, so no keytool and no JKS);
- `passwords.json`: one random SCRAM password per principal (`admin` and each service), put
  in the metadata log when the storage is formatted (`kafka-storage format --add-scram`).

The controller listener stays PLAINTEXT on 127.0.0.1 (a single combined node talks to
itself there); its principal, `User:ANONYMOUS`, must be a super user for the broker to
register with the controller. On a shared machine that port is as open as the machine's
loopback: this is a development broker (docs/SECURITY.md says what production does).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ADMIN = "admin"
MECHANISM = "SCRAM-SHA-512"
SECURE_ENV = "FLYWHEEL_KAFKA_SECURE"
LISTENER = "SASL_SSL"


def secure_from_env() -> bool:
    """FLYWHEEL_KAFKA_SECURE=1 asks `python -m devstack up` (and the demo) for the secured
    broker."""
    return os.environ.get(SECURE_ENV, "").strip().lower() in ("1", "true", "yes")


def _escape(pem: str) -> str:
    """A PEM block as one Java properties value (newlines as `\\n`)."""
    return pem.strip().replace("\n", "\\n")


@dataclass(frozen=True)
class BrokerSecurity:
    """The files and users of one secured dev broker."""

    dir: Path
    passwords: dict[str, str]  # principal name -> SCRAM password

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def broker_cert(self) -> Path:
        return self.dir / "broker.pem"

    @property
    def broker_key(self) -> Path:
        return self.dir / "broker.key"

    @classmethod
    def create(cls, kafka_dir: Path, principals: tuple[str, ...]) -> BrokerSecurity:
        """Load, or make once: the CA, the broker's certificate and a password per principal
        (`admin` and `principals`). A principal added later gets a password, but SCRAM users
        exist only from the storage format on: a new one needs a fresh state dir."""
        directory = kafka_dir / "security"
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        security = cls(directory, {})
        if not security.ca_file.exists() or not security.broker_key.exists():
            security._make_certificates()
        path = directory / "passwords.json"
        passwords: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        for name in (ADMIN, *principals):
            passwords.setdefault(name, secrets.token_urlsafe(24))
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_text(json.dumps(passwords, indent=2) + "\n")
        tmp.replace(path)
        return cls(directory, passwords)

    def _make_certificates(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = dt.datetime.now(dt.UTC)
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flywheel dev Kafka CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=825))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        key_pem = key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.broker_key.touch(mode=0o600)
        self.broker_key.write_bytes(key_pem)
        self.broker_cert.write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
        self.ca_file.write_bytes(ca.public_bytes(pem))  # last: its presence means "made"

    # --- the broker ---------------------------------------------------------------------------

    def broker_properties(self, port: int, controller_port: int) -> dict[str, str]:
        """What replaces the PLAINTEXT listener in the broker's server.properties."""
        admin_password = self.passwords[ADMIN]
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN}" password="{admin_password}";'
        )
        return {
            "listeners": (
                f"{LISTENER}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
            ),
            "advertised.listeners": f"{LISTENER}://127.0.0.1:{port}",
            "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{LISTENER}:SASL_SSL",
            "inter.broker.listener.name": LISTENER,
            "sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256",
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            # one login context per enabled mechanism; the broker's own (inter-broker) login
            f"listener.name.{LISTENER.lower()}.scram-sha-512.sasl.jaas.config": jaas,
            f"listener.name.{LISTENER.lower()}.scram-sha-256.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.certificate.chain": _escape(self.broker_cert.read_text()),
            "ssl.keystore.key": _escape(self.broker_key.read_text()),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.certificates": _escape(self.ca_file.read_text()),
            "ssl.endpoint.identification.algorithm": "https",
            "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
            "authorizer.class.name": ("org.apache.kafka.metadata.authorizer.StandardAuthorizer"),
            "allow.everyone.if.no.acl.found": "false",
            # ANONYMOUS: the broker's own connection to the controller listener (PLAINTEXT)
            "super.users": f"User:{ADMIN};User:ANONYMOUS",
        }

    def format_args(self) -> list[str]:
        """`kafka-storage format` arguments that create every principal's SCRAM credentials."""
        args: list[str] = []
        for name, password in self.passwords.items():
            for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
                args += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        return args

    # --- the clients --------------------------------------------------------------------------

    def client_env(self, principal: str) -> dict[str, str]:
        """The FLYWHEEL_KAFKA_* variables of a process running as `principal`."""
        return {
            "FLYWHEEL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "FLYWHEEL_KAFKA_SASL_MECHANISM": MECHANISM,
            "FLYWHEEL_KAFKA_SASL_USERNAME": principal,
            "FLYWHEEL_KAFKA_SASL_PASSWORD": self.passwords[principal],
            "FLYWHEEL_KAFKA_SSL_CAFILE": str(self.ca_file),
        }

    def client_options(self, principal: str = ADMIN) -> dict[str, Any]:
        """aiokafka keyword arguments for a client running as `principal` (built by
        `shared.kafka.client_security`, like every other client's)."""
        from shared.kafka import client_security
        from shared.settings import Settings

        env = self.client_env(principal)
        settings = Settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism=MECHANISM,
            kafka_sasl_username=principal,
            kafka_sasl_password=env["FLYWHEEL_KAFKA_SASL_PASSWORD"],
            kafka_ssl_cafile=self.ca_file,
        )
        return client_security(settings)
