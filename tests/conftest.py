"""Test fixtures: one real Kafka broker and one real PostgreSQL server per test session.

Each integration test gets its own topic namespace (a prefix) and its own databases, so tests
never see each other's events or state, and can run against a long-lived dev stack too.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.cloudevents import BROADCAST, Envelope, OutgoingRecord, decode, encode, header_map
from shared.contracts import ACTIVITY, ActivityV1
from shared.eventtime import CLOCK_ONLY_TYPES, clock_tick, is_clock_only
from shared.kafka import ensure_topics
from shared.members import pseudonym
from shared.service import ConsumingService, ServiceSpec
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[1]
PSEUDONYM_KEY = "tests-pseudonym-key-Zq8vN3xK5pL1wR7t"
"""Every test gateway's FLYWHEEL_PSEUDONYM_KEY: `member_of` gives the ids it publishes."""


def member_of(platform: str, platform_user_id: str | int) -> str:
    """The member id a test gateway gives a platform identity seen first (its pseudonym)."""
    return pseudonym(PSEUDONYM_KEY.encode(), platform, str(platform_user_id))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow", action="store_true", help="also run the tests marked slow (minutes each)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="takes minutes; run with `make test-slow` (--run-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@dataclass
class Stack:
    """What the session's servers are, and the handle to restart them (crash tests)."""

    kafka_bootstrap: str
    postgres_admin_url: str
    devstack: Any  # devstack.stack.DevStack: starts service processes, restarts servers

    @property
    def security(self) -> dict[str, Any]:
        """aiokafka's TLS and SASL arguments of the stack's admin (empty: PLAINTEXT); the
        session's stack is plaintext, a secured one (tests/test_kafka_security.py) is not."""
        return dict(self.devstack.admin_security())


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """Local processes by default; KAFKA_BOOTSTRAP_SERVERS / FLYWHEEL_POSTGRES_ADMIN_URL point
    at existing servers, FLYWHEEL_USE_TESTCONTAINERS=1 at containers (see devstack.stack)."""
    from devstack.stack import DevStack

    # Not under pytest's tmp root: every pytest session chmods that to 0700, which locks out
    # the unprivileged user the embedded PostgreSQL runs as when tests run as root.
    state_dir = Path(tempfile.mkdtemp(prefix="flywheel-test-stack-"))
    state_dir.chmod(0o755)
    devstack = DevStack(state_dir, secure=False)  # the secured one: tests/test_kafka_security.py
    endpoints = devstack.start()
    try:
        yield Stack(endpoints.kafka_bootstrap, endpoints.postgres_admin_url, devstack)
    finally:
        devstack.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


@dataclass
class Namespace:
    """One test's private world on the shared servers."""

    stack: Stack
    prefix: str

    def settings(self, database_url: str = "", **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": self.stack.kafka_bootstrap,
            "topic_prefix": self.prefix,
            "topic_partitions": 3,
            "consumer_batch_timeout_ms": 50,
            "transient_retry_initial_s": 0.05,
            "shutdown_grace_s": 10.0,
            "metrics_port": 0,  # several gateways may run at once: no fixed metrics port
            "pseudonym_key": PSEUDONYM_KEY,  # so a test knows the member ids it will see
        }
        if database_url:
            values["database_url"] = database_url
        values.update(overrides)
        return Settings(**values)

    def env(self, database_url: str, **extra: str) -> dict[str, str]:
        """The environment of a service process living in this namespace."""
        env = dict(os.environ)
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.stack.kafka_bootstrap,
                "FLYWHEEL_TOPIC_PREFIX": self.prefix,
                "FLYWHEEL_DATABASE_URL": database_url,
                "FLYWHEEL_CONSUMER_BATCH_TIMEOUT_MS": "50",
                "FLYWHEEL_METRICS_PORT": "0",
                "FLYWHEEL_PSEUDONYM_KEY": PSEUDONYM_KEY,
            }
        )
        env.update(extra)
        return env

    async def create_database(self, name: str) -> str:
        """A new empty database for one service of this test; returns its URL."""
        db = f"{self.prefix.strip('.').replace('-', '_')}_{name}"
        conn = await asyncpg.connect(self.stack.postgres_admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{db}"')
        finally:
            await conn.close()
        return _with_database(self.stack.postgres_admin_url, db)

    def topic(self, name: str) -> str:
        return self.prefix + name


def _with_database(url: str, database: str) -> str:
    """The same server and credentials, another database."""
    head, _, tail = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{database}" + (f"?{tail}" if tail else "")


async def new_namespace(stack: Stack) -> Namespace:
    """A private world with its topics made (a test that compares two runs takes a second)."""
    ns = Namespace(stack, f"t{uuid.uuid4().hex[:10]}.")
    await ensure_topics(
        stack.kafka_bootstrap,
        partitions=3,
        replication_factor=1,
        prefix=ns.prefix,
        security=stack.security,
    )
    return ns


@pytest.fixture
async def namespace(stack: Stack) -> Namespace:
    return await new_namespace(stack)


@asynccontextmanager
async def running(spec: ServiceSpec, settings: Settings) -> AsyncIterator[ConsumingService]:
    """A service in this event loop: same code path as `python -m services.X`, minus signals."""
    service = ConsumingService(spec, settings)
    await service.start_resources()
    await service.broker.start()
    try:
        yield service
    finally:
        await service.broker.stop()
        await service.stop_resources()


async def publish(namespace: Namespace, records: list[OutgoingRecord]) -> None:
    """Records in order; one whose partition is BROADCAST goes to every partition, as the
    outbox relay sends it."""
    producer = AIOKafkaProducer(
        bootstrap_servers=namespace.stack.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        **namespace.stack.security,
    )
    await producer.start()
    try:
        futures = []
        for r in records:
            topic = namespace.topic(r.topic)
            partitions: list[int | None] = [r.partition]
            if r.partition == BROADCAST:
                partitions = sorted(await producer.partitions_for(topic))
            for partition in partitions:
                futures.append(
                    await producer.send(
                        topic, r.value, key=r.key, headers=r.headers, partition=partition
                    )
                )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def publish_tick(namespace: Namespace, at: datetime) -> None:
    """A clock tick of event time `at` on every partition of member-activity: what the
    gateway's ticker sends, so every clock (and the watermarks downstream) can pass `at`."""
    await publish(namespace, [clock_tick(at, clock="tests")])


async def publish_activities(namespace: Namespace, activities: list[ActivityV1]) -> None:
    await publish(
        namespace,
        [
            encode(ACTIVITY, a, event_id=f"{a.source}:{a.activity_id}", source="/tests")
            for a in activities
        ],
    )


async def read_topic(
    namespace: Namespace,
    topic: str,
    *,
    until: int,
    timeout_s: float = 30.0,
    with_clocks: bool = False,
) -> list[Any]:
    """Every record of a namespaced topic from the beginning, waiting until `until` of them
    arrived: events, not counting clock ticks and watermarks unless `with_clocks` (they ride
    on the same topics and would end the wait before the events it is for)."""
    consumer = AIOKafkaConsumer(
        namespace.topic(topic),
        bootstrap_servers=namespace.stack.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        **namespace.stack.security,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s

        def counted() -> int:
            if with_clocks:
                return len(records)
            return sum(
                header_map(r.headers).get("ce_type") not in CLOCK_ONLY_TYPES for r in records
            )

        while counted() < until and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
        # anything beyond `until` that is already there counts too (duplicates show up)
        for part in (await consumer.getmany(timeout_ms=300)).values():
            records.extend(part)
    finally:
        await consumer.stop()
    return records


def _prefix_of(topic: str) -> str:
    """The namespace prefix of a topic read back (decode checks the logical topic)."""
    match = re.match(r"^[a-z][0-9a-f]{10}\.", topic)  # t..., and the tests' own (d..., i..., r...)
    return match.group(0) if match else ""


def envelopes(records: list[Any], *, with_clocks: bool = False) -> list[Envelope]:
    """The decoded events; without clock ticks and in-band watermarks (which only move the
    services' clocks) unless `with_clocks`."""
    decoded = [
        decode(
            topic=r.topic,
            partition=r.partition,
            offset=r.offset,
            key=r.key,
            value=r.value,
            headers=r.headers,
            topic_prefix=_prefix_of(r.topic),
        )
        for r in records
    ]
    return [e for e in decoded if with_clocks or not is_clock_only(e)]


async def wait_for_journeys(
    client: Any, expected: Mapping[str, Mapping[str, str | None]], timeout_s: float = 60
) -> dict[str, Any]:
    """GET each member's journey (`client`: an httpx client on the gateway) until every one
    answers and shows each of its expected stages, `{member: {dimension: stage}}` (a stage of
    None: any stage in that dimension); fails naming what was seen. Each member's own: the
    read model applies its transitions partition by partition, so one member's stages say
    nothing of another's."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    journeys: dict[str, Any] = {}

    def shows(member: str, dimension: str, stage: str | None) -> bool:
        found = journeys.get(member, {}).get("stages", {}).get(dimension)
        return found is not None and stage in (None, found["stage"])

    while asyncio.get_running_loop().time() < deadline:
        for member in expected:
            response = await client.get(f"/v1/members/{member}/journey")
            if response.status_code == 200:
                journeys[member] = response.json()
        if set(journeys) == set(expected) and all(
            shows(m, d, s) for m, stages in expected.items() for d, s in stages.items()
        ):
            return journeys
        await asyncio.sleep(0.3)
    raise AssertionError(
        f"journeys incomplete after {timeout_s} s: expected {dict(expected)}, saw {journeys}"
    )
