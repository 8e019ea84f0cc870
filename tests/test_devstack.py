"""The dev stack runner (devstack.stack): what every integration test and the demo stand on.

Starts its own DevStack on free ports (a few seconds), so it runs beside a developer's stack
and does not depend on the session fixture in conftest.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from devstack import postgres
from devstack.cli import main
from devstack.common import StackError
from devstack.stack import (
    DevStack,
    Endpoints,
    PortInUseError,
    StackAlreadyRunningError,
)
from services.registry import SERVICE_NAMES as SERVICES
from shared.settings import Settings
from shared.topics import MEMBER_ACTIVITY

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def devstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    stack = DevStack(tmp_path_factory.mktemp("devstack"))
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def _local(stack: DevStack) -> bool:
    """True when this DevStack runs the broker and Postgres itself (not env-provided servers)."""
    return (
        stack.state_dir.joinpath("pids", "kafka.pid").exists()
        and (stack.state_dir / "postgres" / "data").exists()
    )


async def _round_trip(bootstrap: str, topic: str) -> tuple[int, int]:
    """Produce one record and read exactly it back; returns (partition, offset)."""
    key, value = uuid.uuid4().bytes, b"hello " + uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()
    await _read_back(bootstrap, topic, meta.partition, meta.offset, value)
    return meta.partition, meta.offset


async def _read_back(bootstrap: str, topic: str, partition: int, offset: int, value: bytes) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        record = await consumer.getone(tp)
        assert record.value == value
    finally:
        await consumer.stop()


async def test_registry_topic_round_trip(devstack: DevStack) -> None:
    settings = Settings()
    topic = settings.topic(MEMBER_ACTIVITY.name)
    await _round_trip(devstack.endpoints.kafka_bootstrap, topic)

    admin = AIOKafkaAdminClient(bootstrap_servers=devstack.endpoints.kafka_bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = described["partitions"]
    assert len(partitions) == (MEMBER_ACTIVITY.partitions or settings.topic_partitions)


async def test_each_service_has_its_own_database(devstack: DevStack) -> None:
    urls = devstack.endpoints.database_urls
    assert set(urls) == set(SERVICES)
    for service, url in urls.items():
        conn = await asyncpg.connect(url)
        try:
            row = await conn.fetchrow("SELECT current_user AS u, current_database() AS d")
            assert row is not None
            assert (row["u"], row["d"]) == (f"flywheel_{service}", f"flywheel_{service}")
            await conn.execute("CREATE TABLE IF NOT EXISTS devstack_probe (id int)")
        finally:
            await conn.close()

    # ... and cannot reach another service's database.
    awareness_role = urls["awareness"].rsplit("/", 1)[0]
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await asyncpg.connect(f"{awareness_role}/flywheel_engagement")


def test_endpoints_file_matches(devstack: DevStack) -> None:
    written = Endpoints.from_json((devstack.state_dir / "endpoints.json").read_text())
    assert written == devstack.endpoints
    assert (devstack.state_dir / "endpoints.json").stat().st_mode & 0o077 == 0


def test_second_start_in_same_state_dir_is_refused(devstack: DevStack) -> None:
    if not _local(devstack):
        pytest.skip("servers come from the environment; nothing local to collide with")
    with pytest.raises(StackAlreadyRunningError, match=r"python -m devstack status"):
        DevStack(devstack.state_dir, backend="local").start()


def test_busy_port_is_a_clear_error_and_stale_pidfiles_are_cleaned(tmp_path: Path) -> None:
    # A pidfile left by a process that is gone, as after a machine crash.
    pidfile = tmp_path / "pids" / "awareness.pid"
    pidfile.parent.mkdir()
    pidfile.write_text('{"pid": 999999999, "create_time": 1.0}')
    notes: list[str] = []
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PortInUseError) as caught:
            DevStack(tmp_path, kafka_port=port, backend="local", progress=notes.append).start()
    message = str(caught.value)
    assert caught.value.port == port
    assert f"port {port} (Kafka) is in use by another process" in message
    assert "FLYWHEEL_KAFKA_PORT" in message
    assert f"pid {os.getpid()}" in message  # names the owner when the OS lets us see it
    assert "\n" not in message
    assert not pidfile.exists()
    assert any("stale pidfile of awareness" in note for note in notes)


def test_cli_busy_port_exits_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "FLYWHEEL_POSTGRES_ADMIN_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FLYWHEEL_USE_TESTCONTAINERS", "0")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setenv("FLYWHEEL_KAFKA_PORT", str(port))
        code = main(["up", "--infra-only", "--state-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith(f"error: port {port} (Kafka) is in use")
    assert len(err.splitlines()) == 1


async def test_restarts_keep_data(devstack: DevStack) -> None:
    """What crash tests rely on: same ports, same data, after a kill -9 of either server."""
    if not _local(devstack):
        pytest.skip("servers come from the environment; this stack cannot restart them")
    bootstrap = devstack.endpoints.kafka_bootstrap
    topic = Settings().topic(MEMBER_ACTIVITY.name)
    value = b"kept " + uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()

    devstack.restart_kafka(hard=True)
    devstack.restart_postgres(immediate=True)

    assert devstack.endpoints.kafka_bootstrap == bootstrap
    await _read_back(bootstrap, topic, meta.partition, meta.offset, value)
    conn = await asyncpg.connect(devstack.endpoints.database_urls["awareness"])
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS restart_probe (id int)")
        await conn.execute("INSERT INTO restart_probe VALUES (1)")
    finally:
        await conn.close()
    devstack.restart_postgres(immediate=True)
    conn = await asyncpg.connect(devstack.endpoints.database_urls["awareness"])
    try:
        assert await conn.fetchval("SELECT count(*) FROM restart_probe") == 1
    finally:
        await conn.close()


async def test_a_deleted_and_recreated_state_dir_gets_a_fresh_postgres(tmp_path: Path) -> None:
    """`rm -rf .flywheel && up` must work: nothing of the old cluster may be picked up."""
    from devstack.common import free_ports
    from devstack.postgres import LocalPostgres

    state = tmp_path / "state"
    (port,) = free_ports(1)
    first = LocalPostgres(state, port=port, progress=lambda _: None)
    first.start()
    old_data = first.data_dir.resolve()
    first.stop()
    shutil.rmtree(state)

    second = LocalPostgres(state, port=port, progress=lambda _: None)
    second.start()
    try:
        conn = await asyncpg.connect(second.admin_url)
        await conn.close()
        if second.relocated:  # under root the cluster lives outside; the old one is collected
            assert not old_data.exists()
    finally:
        second.stop()


async def test_the_local_postgres_gets_a_page_cache_sized_to_the_machine(
    devstack: DevStack,
) -> None:
    """devstack.postgres.shared_buffers(): PostgreSQL's 128 MB default made a long import's
    server evict and rewrite pages (docs/PERFORMANCE.md, phase 7, eighth round)."""
    if not _local(devstack):
        pytest.skip("a PostgreSQL this stack did not start keeps its own settings")
    conn = await asyncpg.connect(devstack.endpoints.database_urls["gateway"])
    try:
        pages = await conn.fetchval(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'shared_buffers'"
        )
    finally:
        await conn.close()
    assert f"{pages * 8192 // 2**20}MB" == postgres.shared_buffers()


def test_the_page_cache_is_a_quarter_of_the_memory_within_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(postgres.SHARED_BUFFERS_ENV, raising=False)
    for total_gib, expected in ((0.25, "128MB"), (2, "512MB"), (24, "1024MB")):
        memory = type("Memory", (), {"total": int(total_gib * 2**30)})()
        monkeypatch.setattr(postgres.psutil, "virtual_memory", lambda m=memory: m)
        assert postgres.shared_buffers() == expected
    monkeypatch.setenv(postgres.SHARED_BUFFERS_ENV, "256MB")
    assert postgres.shared_buffers() == "256MB"


@pytest.mark.parametrize("value", ["256mb", "1.5GB", "-1", "256 MB", "lots"])
def test_a_malformed_page_cache_size_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(postgres.SHARED_BUFFERS_ENV, value)
    with pytest.raises(StackError, match=f"{postgres.SHARED_BUFFERS_ENV}=.*not a PostgreSQL size"):
        postgres.shared_buffers()
