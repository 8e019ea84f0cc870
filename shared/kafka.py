"""Kafka plumbing: producer and consumer settings every service uses, the clients' security
arguments (TLS, SASL) built once from the settings, and topic creation."""

from __future__ import annotations

import functools
import logging
import socket
import ssl
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from shared.settings import Settings
from shared.topics import ALL_TOPICS, Topic

if TYPE_CHECKING:
    from faststream.security import BaseSecurity

log = logging.getLogger(__name__)

ClientSecurity = Mapping[str, Any]
"""aiokafka keyword arguments (`security_protocol`, `ssl_context`, `sasl_*`) that every
client of a process gets: producers, consumers and admin clients alike."""

PLAINTEXT: ClientSecurity = {}


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of every client, or None when the protocol has no TLS.

    Verifies the broker's certificate and host name against FLYWHEEL_KAFKA_SSL_CAFILE (or the
    system's trust store), TLS 1.2 at least; presents a client certificate when one is set
    (mutual TLS)."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH,
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.kafka_ssl_certfile is not None:
        secret = settings.kafka_ssl_key_password
        password = secret.get_secret_value() if secret is not None else ""
        context.load_cert_chain(
            certfile=str(settings.kafka_ssl_certfile),
            keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
            # a callable: an encrypted key without its password fails, never prompts on a tty
            password=lambda: password,
        )
    return context


def client_security(settings: Settings) -> dict[str, Any]:
    """The aiokafka keyword arguments of FLYWHEEL_KAFKA_SECURITY_PROTOCOL and its SASL and TLS
    settings, for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient alike. Built here
    once; every client of the code base takes it. Holds the password: never log it."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol, "ssl_context": ssl_context(settings)}
    if protocol.startswith("SASL_"):
        assert settings.kafka_sasl_username and settings.kafka_sasl_password  # validated
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password.get_secret_value(),
        )
    return options


def broker_security(settings: Settings) -> BaseSecurity | None:
    """The same, as FastStream's security object for `KafkaBroker(security=...)` (it turns it
    back into the aiokafka arguments above for its producer, consumers and admin client)."""
    from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

    options = client_security(settings)
    if not options:
        return None
    use_ssl = options["security_protocol"] in ("SSL", "SASL_SSL")
    context = options["ssl_context"]
    if "sasl_mechanism" not in options:
        return BaseSecurity(ssl_context=context, use_ssl=use_ssl)
    kind = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
    security: BaseSecurity = kind[options["sasl_mechanism"]](
        options["sasl_plain_username"],
        options["sasl_plain_password"],
        ssl_context=context,
        use_ssl=use_ssl,
    )
    return security


FETCH_MAX_WAIT_MS = 50
SESSION_TIMEOUT_MS = 10_000
"""How long the group coordinator waits for a silent member before giving its partitions to
the others. With static membership it is also how long a replica may take to restart and get
its partitions back without a rebalance, and how long a stopped one keeps them (`ops replay`
waits for it: a static member does not leave its group when it stops)."""
PRODUCER_MAX_BATCH_BYTES = 262_144
KEY_HASHES_KEPT = 16_384
"""Keys whose murmur2 hash `partition_by_key` remembers, the most recently used: ~3 MB at
most. On the bench's catch-up backlog (200,000 activities of 23,602 members, a Zipf spread)
88 % of the keys are found, as with 65,536 (which takes 13 MB)."""


@functools.lru_cache(maxsize=KEY_HASHES_KEPT)
def _key_hash(key: bytes) -> int:
    hashed: int = murmur2(key)
    return hashed & 0x7FFFFFFF


def partition_by_key(
    key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
) -> int:
    """aiokafka's `DefaultPartitioner`, with each key's hash remembered: the murmur2 of the
    key, as the Java client and librdkafka's `murmur2_random` compute it, so a member's
    records land on one partition whichever client wrote them. aiokafka computes it in pure
    Python, ~5 us a key, and the same members' keys come back record after record (4 % of
    engagement's CPU in an import, where every emitted event is keyed); remembered, 0.2 us.
    A record without a key goes to a random partition, as there."""
    if type(key) is not bytes:  # None, or a bytearray (unhashable): as aiokafka does
        chosen: int = DefaultPartitioner()(key, all_partitions, available)
        return chosen
    return all_partitions[_key_hash(key) % len(all_partitions)]


def producer_options(settings: Settings) -> dict[str, Any]:
    """Explicit on purpose: an event the broker has not fully replicated is not 'sent'."""
    return {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.producer_linger_ms,
        "compression_type": None,
        "request_timeout_ms": 30_000,
        # A partition's batch holds up to 256 KiB (aiokafka's default, 16 KiB, cut a gateway
        # request of 500 activities or an outbox round into many produce round trips): the
        # benchmark measured ~40 % less gateway CPU per activity, ~25 % less for a passthrough.
        "max_batch_size": PRODUCER_MAX_BATCH_BYTES,
        "partitioner": partition_by_key,
    }


def group_instance_id(settings: Settings, consumer_group: str) -> str:
    """This replica's static member name in `consumer_group` (KIP-345): FLYWHEEL_INSTANCE_ID,
    else the host name (a pod's name in Kubernetes), then the group.

    Static, not per process: a process restarted after a crash rejoins under the same name
    and the coordinator hands it the partitions it had at once, instead of waiting out the
    session timeout of the dead member and rebalancing the whole group. The group is
    appended so the gateway's two groups, and services run side by side on one host, keep
    names of their own; replicas of one service on one host must set distinct instance ids.
    """
    return f"{settings.instance_id or socket.gethostname()}-{consumer_group}"[:249]


def consumer_options(settings: Settings, consumer_group: str) -> dict[str, Any]:
    """Batch consumption with commits only after the batch is durable (never auto-commit),
    as a static member of `consumer_group`."""
    return {
        "group_instance_id": group_instance_id(settings, consumer_group),
        "session_timeout_ms": SESSION_TIMEOUT_MS,
        "batch": True,
        "max_records": settings.consumer_max_records,
        "batch_timeout_ms": settings.consumer_batch_timeout_ms,
        "auto_offset_reset": settings.consumer_auto_offset_reset,
        "isolation_level": "read_committed",
        # aiokafka keeps one fetch in flight per broker, without the partitions whose records
        # are still buffered; data arriving on those waits for that fetch to come back, which
        # the broker holds up to fetch_max_wait_ms when nothing else arrives (default 500:
        # end-to-end p99 ~1 s at 1,000/s). 50 ms bounds that wait; idle, it costs ~20 small
        # fetch requests a second per consumer.
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
    }


def make_producer(settings: Settings, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        **producer_options(settings),
        **client_security(settings),
    )


async def ensure_topics(
    bootstrap_servers: str,
    *,
    partitions: int,
    replication_factor: int,
    topics: tuple[Topic, ...] = ALL_TOPICS,
    prefix: str = "",
    security: ClientSecurity = PLAINTEXT,
) -> list[str]:
    """Create every registry topic that does not exist yet; return the names created.
    `security`: `client_security(settings)` of a principal allowed to create topics."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, client_id="flywheel-admin", **security
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=prefix + t.name,
                num_partitions=t.partitions or partitions,
                replication_factor=replication_factor,
                topic_configs=t.config(),
            )
            for t in topics
            if prefix + t.name not in existing
        ]
        if not wanted:
            return []
        try:
            response = await admin.create_topics(wanted)
        except TopicAlreadyExistsError:
            response = None  # created by a racing replica between list and create
        for error in getattr(response, "topic_errors", None) or ():
            name, code = error[0], error[1]
            if code not in (0, TopicAlreadyExistsError.errno):
                message = error[2] if len(error) > 2 else ""
                raise RuntimeError(f"creating topic {name!r} failed: error {code} {message}")
        created = [t.name for t in wanted]
        log.info("created topics: %s", ", ".join(created))
        return created
    finally:
        await admin.close()


async def consumer_lag(
    bootstrap_servers: str,
    group_id: str,
    topics: list[str],
    security: ClientSecurity = PLAINTEXT,
) -> dict[str, int]:
    """Records not yet committed by a consumer group, per "topic[partition]".

    A partition the group never committed counts from the log start, so a group that has
    not started yet shows its whole backlog.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, client_id="flywheel-lag", **security
    )
    probe = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, **security
    )
    await admin.start()
    await probe.start()
    try:
        described = await admin.describe_topics(topics)
        partitions = [
            TopicPartition(d["topic"], p["partition"])
            for d in described
            if d["error_code"] == 0
            for p in sorted(d["partitions"], key=lambda p: int(p["partition"]))
        ]
        committed = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
        ends = await probe.end_offsets(partitions)
        starts = await probe.beginning_offsets(partitions)
        lag = {}
        for tp in partitions:
            meta = committed.get(tp)
            position = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
            lag[f"{tp.topic}[{tp.partition}]"] = max(0, ends[tp] - position)
        return lag
    finally:
        await probe.stop()
        await admin.close()
