"""Kafka security without a broker: the settings, the client arguments built once from them,
the event-type-per-topic check of decoding, the ACLs derived from the code, and the secured
dev broker's CA, certificate and SCRAM users. (On a real secured broker:
tests/test_kafka_security.py.)"""

from __future__ import annotations

import ast
import ssl
import stat
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from devstack.kafka_security import BrokerSecurity
from ops.acls import grants, markdown_table, required_acls
from services import registry
from shared import contracts
from shared.cloudevents import DecodeError, decode, derive_event_id, encode
from shared.contracts import MEMBER_ERASED, MemberErasedV1
from shared.kafka import broker_security, client_security, ssl_context
from shared.settings import Settings
from shared.topics import ALL_TOPICS, DLQ_TOPICS, MEMBER_ACTIVITY, MEMBER_LIFECYCLE

SECRET = "s3cr3t-password-value"


def _settings(**values: Any) -> Settings:
    return Settings(**values)


# --- settings and client arguments --------------------------------------------------------------


def test_sasl_needs_a_username_and_a_password() -> None:
    with pytest.raises(ValidationError, match="FLYWHEEL_KAFKA_SASL_USERNAME"):
        _settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="gateway")


def test_plain_is_refused_without_tls() -> None:
    with pytest.raises(ValidationError, match="in clear"):
        _settings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="PLAIN",
            kafka_sasl_username="gateway",
            kafka_sasl_password=SECRET,
        )


def test_a_key_needs_its_certificate() -> None:
    with pytest.raises(ValidationError, match="CERTFILE"):
        _settings(kafka_security_protocol="SSL", kafka_ssl_keyfile=Path("/k.pem"))


def test_plaintext_adds_nothing() -> None:
    settings = _settings()
    assert client_security(settings) == {}
    assert broker_security(settings) is None
    assert ssl_context(settings) is None


def test_sasl_ssl_with_scram_verifies_the_broker_and_logs_in() -> None:
    settings = _settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="engagement",
        kafka_sasl_password=SECRET,
    )
    options = client_security(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_username"] == "engagement"
    assert options["sasl_plain_password"] == SECRET
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    # the password is a SecretStr: not in the settings' repr, hence in no log of them
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())


def test_sasl_plaintext_has_no_tls_context() -> None:
    options = client_security(
        _settings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_username="gateway",
            kafka_sasl_password=SECRET,
        )
    )
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["ssl_context"] is None


@pytest.mark.parametrize(
    ("protocol", "mechanism", "kind"),
    [
        ("SSL", "SCRAM-SHA-512", "BaseSecurity"),
        ("SASL_SSL", "PLAIN", "SASLPlaintext"),
        ("SASL_SSL", "SCRAM-SHA-256", "SASLScram256"),
        ("SASL_SSL", "SCRAM-SHA-512", "SASLScram512"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-512", "SASLScram512"),
    ],
)
def test_faststream_gets_the_same_arguments(protocol: str, mechanism: str, kind: str) -> None:
    from faststream.kafka.security import parse_security

    values: dict[str, Any] = {
        "kafka_security_protocol": protocol,
        "kafka_sasl_mechanism": mechanism,
    }
    if protocol.startswith("SASL_"):
        values.update(kafka_sasl_username="awareness", kafka_sasl_password=SECRET)
    settings = _settings(**values)
    security = broker_security(settings)
    assert type(security).__name__ == kind
    parsed = parse_security(security)
    expected = client_security(settings)
    assert {k: v for k, v in parsed.items() if k != "ssl_context"} == {
        k: v for k, v in expected.items() if k != "ssl_context"
    }
    assert (parsed["ssl_context"] is None) == (expected["ssl_context"] is None)


def test_mutual_tls_loads_the_ca_and_an_encrypted_client_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    broker = BrokerSecurity.create(tmp_path, ())
    # a client certificate: for the test, the broker's own (signed by the CA), key re-encrypted
    key = serialization.load_pem_private_key(broker.broker_key.read_bytes(), password=None)
    encrypted = tmp_path / "client.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"key-pass"),
        )
    )
    settings = _settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=broker.ca_file,
        kafka_ssl_certfile=broker.broker_cert,
        kafka_ssl_keyfile=encrypted,
        kafka_ssl_key_password="key-pass",
    )
    context = ssl_context(settings)
    assert context is not None
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "flywheel dev Kafka CA"),),)
    ]
    with pytest.raises(ssl.SSLError):
        ssl_context(settings.model_copy(update={"kafka_ssl_key_password": None}))


# --- an event type only on its own topics ---------------------------------------------------------


def _erasure() -> Any:
    data = MemberErasedV1(member_id="ada", occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
    return encode(
        MEMBER_ERASED, data, event_id=derive_event_id("member.erased.v1", "ada"), source="/x"
    )


def _decode(record: Any, topic: str, prefix: str = "") -> Any:
    return decode(
        topic=topic,
        partition=0,
        offset=0,
        key=record.key,
        value=record.value,
        headers=record.headers,
        topic_prefix=prefix,
    )


def test_an_erasure_on_the_activity_topic_is_refused_with_the_reason() -> None:
    with pytest.raises(DecodeError) as refused:
        _decode(_erasure(), "staging.member-activity", prefix="staging.")
    assert refused.value.reason == (
        "event type 'member.erased.v1' is not registered for topic 'member-activity' "
        "(only 'member-lifecycle'): refused"
    )
    assert _decode(_erasure(), "staging.member-lifecycle", prefix="staging.").type == (
        "member.erased.v1"
    )


def test_a_type_registered_on_several_topics_is_accepted_on_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    several = replace(MEMBER_ERASED, also_on=(MEMBER_ACTIVITY,))
    assert several.topics == (MEMBER_LIFECYCLE, MEMBER_ACTIVITY)
    monkeypatch.setitem(contracts.EVENT_TYPES, MEMBER_ERASED.type, several)
    for topic in ("member-lifecycle", "member-activity"):
        assert _decode(_erasure(), topic).topic == topic
    with pytest.raises(DecodeError, match=r"not registered for topic 'signals\.sales'"):
        _decode(_erasure(), "signals.sales")


def test_every_event_type_is_registered_on_its_own_topic() -> None:
    for event_type in contracts.EVENT_TYPES.values():
        assert event_type.topics[0] is event_type.topic
        assert all(t in ALL_TOPICS for t in event_type.topics)


# --- ACLs derived from the code -----------------------------------------------------------------


def test_each_service_reads_what_it_consumes_and_writes_what_it_emits() -> None:
    acls = required_acls()
    for name, spec in registry.specs().items():
        mine = {(a.resource_type, a.resource_name, a.operation) for a in acls if a.service == name}
        assert {a.principal for a in acls if a.service == name} == {f"User:{name}"}
        consumed = [t.name for t in spec.consumes] + [
            t.name for _, topics in spec.other_groups for t in topics
        ]
        for topic in consumed:
            assert {("TOPIC", topic, "READ"), ("TOPIC", topic, "DESCRIBE")} <= mine
            assert ("TOPIC", f"{topic}.dlq", "WRITE") in mine  # its dead letters
        for event_type in spec.emits:
            assert ("TOPIC", event_type.topic.name, "WRITE") in mine
        assert ("GROUP", spec.consumer_group, "READ") in mine
        written = {n for t, n, op in mine if t == "TOPIC" and op == "WRITE"}
        assert written == {t.name for t in spec.produces} | {f"{t}.dlq" for t in consumed}
        assert all(op != "READ" or not n.endswith(".dlq") for _, n, op in mine)
        assert all(op in ("READ", "WRITE", "DESCRIBE") for _, _, op in mine)


def test_only_the_gateway_writes_activities_and_the_lifecycle_is_written_by_few() -> None:
    writers: dict[str, set[str]] = {}
    for acl in required_acls():
        if acl.operation == "WRITE":
            writers.setdefault(acl.resource_name, set()).add(acl.service)
    assert writers["member-activity"] == {"gateway"}
    # merges and erasures (gateway), referral acquisitions and visitor erasures (awareness)
    assert writers["member-lifecycle"] == {"gateway", "awareness"}
    assert writers["signals.advocacy"] == {"advocacy"}


def test_the_gateway_also_joins_the_delivery_group() -> None:
    gateway = next(g for g in grants() if g.service == "gateway")
    assert gateway.groups == ("gateway-journey", "gateway-webhooks")


def test_the_prefix_and_the_principal_format_are_applied() -> None:
    acls = required_acls("staging.", principal_format="User:staging-{service}")
    names = {a.resource_name for a in acls}
    assert all(n.startswith("staging.") for n in names)
    assert "staging.awareness" in names and "staging.member-activity.dlq" in names
    assert {a.principal for a in acls} == {f"User:staging-{s}" for s in registry.SERVICE_NAMES}
    registry_names = {"staging." + t.name for t in ALL_TOPICS}
    groups = {"staging." + g for s in registry.specs().values() for g in _groups(s)}
    assert names <= registry_names | groups


def test_legacy_idempotence_adds_idempotent_write_on_the_cluster() -> None:
    legacy = [a for a in required_acls(legacy_idempotence=True) if a.resource_type == "CLUSTER"]
    assert {(a.resource_name, a.operation) for a in legacy} == {
        ("kafka-cluster", "IDEMPOTENT_WRITE")
    }
    assert not [a for a in required_acls() if a.resource_type == "CLUSTER"]


def test_the_dead_letter_topics_are_read_by_no_service() -> None:
    dlqs = {t.name for t in DLQ_TOPICS}
    assert not [a for a in required_acls() if a.resource_name in dlqs and a.operation == "READ"]


def test_the_markdown_table_names_every_principal() -> None:
    table = markdown_table()
    for name in registry.SERVICE_NAMES:
        assert f"| `User:{name}` |" in table


def _groups(spec: Any) -> list[str]:
    return [spec.consumer_group, *(g for g, _ in spec.other_groups)]


SERVICE_DIRS = {
    "awareness": "services/awareness",
    "engagement": "services/engagement",
    "advocacy": "services/advocacy",
    "gateway": "services/gateway",
}


def test_every_event_type_a_service_names_is_declared_in_its_emits() -> None:
    """What a service's code names among the contracts' event types, it emits (no service
    names one only to read it; reading goes by the topics it consumes): a new emitted type
    must be declared, or its principal would lack the grant to write its topic."""
    root = Path(__file__).resolve().parent.parent
    constants = {
        name for name, value in vars(contracts).items() if isinstance(value, contracts.EventType)
    }
    for service, directory in SERVICE_DIRS.items():
        named: set[str] = set()
        for path in (root / directory).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Name) and node.id in constants:
                    named.add(node.id)
                elif isinstance(node, ast.Attribute) and node.attr in constants:
                    named.add(node.attr)
        declared = {
            name for name in constants if getattr(contracts, name) in registry.spec(service).emits
        }
        assert named <= declared, f"{service} names {named - declared} but does not declare it"
        if service != "gateway":  # every stage service emits its transitions (shared.stage)
            assert contracts.STAGE_CHANGED in registry.spec(service).emits


# --- the secured dev broker's material ----------------------------------------------------------


def test_the_broker_certificate_is_signed_by_the_ca_for_localhost(tmp_path: Path) -> None:
    from cryptography import x509

    security = BrokerSecurity.create(tmp_path, ("gateway", "awareness"))
    chain = x509.load_pem_x509_certificates(security.broker_cert.read_bytes())
    ca = x509.load_pem_x509_certificate(security.ca_file.read_bytes())
    chain[0].verify_directly_issued_by(ca)
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert stat.S_IMODE(security.broker_key.stat().st_mode) == 0o600
    assert stat.S_IMODE((security.dir / "passwords.json").stat().st_mode) == 0o600
    # made once: a restart finds the same CA and passwords
    again = BrokerSecurity.create(tmp_path, ("gateway", "awareness"))
    assert again.passwords == security.passwords
    assert again.ca_file.read_bytes() == security.ca_file.read_bytes()


def test_the_broker_runs_the_authorizer_with_scram_users(tmp_path: Path) -> None:
    security = BrokerSecurity.create(tmp_path, ("gateway", "awareness"))
    props = security.broker_properties(9092, 9093)
    assert props["authorizer.class.name"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["listeners"] == "SASL_SSL://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["ssl.keystore.type"] == props["ssl.truststore.type"] == "PEM"
    assert "\n" not in "".join(props.values())  # one properties line each
    args = security.format_args()
    users = {a.split("name=")[1].split(",")[0] for a in args if a.startswith("SCRAM-SHA-512=")}
    assert users == {"admin", "gateway", "awareness"}
    env = security.client_env("gateway")
    assert env["FLYWHEEL_KAFKA_SASL_USERNAME"] == "gateway"
    assert Settings(**{k.removeprefix("FLYWHEEL_").lower(): v for k, v in env.items()})
