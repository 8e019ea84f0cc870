"""What every phase needs: the machine and versions, a private namespace on the stack, loading a
backlog, watching consumer lag and a process's memory."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import psutil  # type: ignore[import-untyped,unused-ignore]
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.workload import Record
from shared.kafka import client_security, ensure_topics
from shared.settings import Settings
from shared.topics import ALL_TOPICS, Topic

PACKAGES = (
    "aiokafka",
    "faststream",
    "asyncpg",
    "pydantic",
    "pydantic-core",
    "orjson",
    "uvloop",
    "fastapi",
    "uvicorn",
    "httpx",
    "quixstreams",
    "confluent-kafka",
    "rocksdict",
    "py-spy",
)

PASSTHROUGH_OUT = Topic("bench.passthrough", key="as read", purpose="the ceiling's output")
QUIX_OUT = Topic("bench.quix-transitions", key="member id", purpose="the Quix peer's output")


def machine() -> dict[str, Any]:
    """Cores, memory and load now: figures from a busy machine are not figures from an idle one."""
    mem = psutil.virtual_memory()
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem.total / 2**30, 1),
        "memory_available_gib": round(mem.available / 2**30, 1),
        "load_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "-"
    try:
        from devstack.kafka import kafka_version

        found["kafka"] = kafka_version()
    except Exception:
        found["kafka"] = "?"
    return found


async def postgres_version(admin_url: str) -> str:
    conn = await asyncpg.connect(admin_url)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def with_database(url: str, database: str) -> str:
    """The same server and credentials, another database."""
    head, _, tail = url.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{database}" + (f"?{tail}" if tail else "")


@dataclass
class Namespace:
    """One phase's private world on the bench's stack: a topic prefix (consumer groups get it
    too) and fresh databases, so phases never see each other's events or state."""

    bootstrap: str
    admin_url: str
    prefix: str
    partitions: int = 6
    databases: dict[str, str] = field(default_factory=dict)

    async def create(self, extra_topics: Sequence[Topic] = ()) -> None:
        await ensure_topics(
            self.bootstrap,
            partitions=self.partitions,
            replication_factor=1,
            topics=(*ALL_TOPICS, *extra_topics),
            prefix=self.prefix,
            security=client_security(Settings()),
        )

    async def database(self, service: str) -> str:
        name = f"{self.prefix.strip('.').replace('-', '_')}_{service}"
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.databases[service] = with_database(self.admin_url, name)
        return self.databases[service]

    def topic(self, name: str) -> str:
        return self.prefix + name

    def env(self, service: str, **extra: str) -> dict[str, str]:
        """What a service process of this namespace gets on top of DevStack.service_env."""
        env = {
            "FLYWHEEL_TOPIC_PREFIX": self.prefix,
            "FLYWHEEL_TOPIC_PARTITIONS": str(self.partitions),
            "FLYWHEEL_DATABASE_URL": self.databases[service],
            "FLYWHEEL_CLOCK_TICK_INTERVAL_S": "0",  # simulated time, as a replay
            # a simulated year from workload.START, not anchored to the wall clock: part of it
            # may lie ahead of it, and must not be refused as a far-future time
            "FLYWHEEL_MAX_FUTURE_S": str(10 * 365 * 86400),
        }
        env.update(extra)
        return env


def load(bootstrap: str, topic: str, records: Iterable[Record]) -> tuple[int, float]:
    """Produce a backlog as fast as the machine allows (confluent-kafka's C producer when
    installed, else aiokafka); returns (records, seconds). acks=all, like the gateway."""
    started = time.monotonic()
    try:
        from confluent_kafka import Producer  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        n = asyncio.run(_load_aiokafka(bootstrap, topic, records))
        return n, time.monotonic() - started
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
        }
    )
    n = 0
    for r in records:
        while True:
            try:
                producer.produce(topic, r.value, r.key, headers=r.headers)
                break
            except BufferError:
                producer.poll(0.05)
        n += 1
        if n % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError("the backlog was not fully acknowledged within 120 s")
    return n, time.monotonic() - started


async def _load_aiokafka(bootstrap: str, topic: str, records: Iterable[Record]) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        max_batch_size=512_000,
        **client_security(Settings()),  # FLYWHEEL_KAFKA_*: a secured broker of your own
    )
    await producer.start()
    n = 0
    try:
        pending = []
        for r in records:
            pending.append(await producer.send(topic, r.value, key=r.key, headers=r.headers))
            n += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return n


class LagWatch:
    """Committed lag of consumer groups, with clients kept open (one look costs a round trip,
    not a connection): a phase looks every half second."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        security = client_security(Settings())
        self.admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="bench-lag", **security
        )
        self.probe = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, **security
        )
        self._partitions: dict[tuple[str, ...], list[TopicPartition]] = {}

    async def __aenter__(self) -> LagWatch:
        await self.admin.start()
        await self.probe.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.probe.stop()
        await self.admin.close()

    async def partitions(self, topics: Sequence[str]) -> list[TopicPartition]:
        key = tuple(topics)
        if key not in self._partitions:
            described = await self.admin.describe_topics(list(topics))
            self._partitions[key] = [
                TopicPartition(d["topic"], int(p["partition"]))
                for d in described
                if d["error_code"] == 0
                for p in d["partitions"]
            ]
        return self._partitions[key]

    async def ends(self, topics: Sequence[str]) -> int:
        """Records on the topics now (from their start: nothing is deleted during a run)."""
        tps = await self.partitions(topics)
        ends = await self.probe.end_offsets(tps)
        return sum(ends.values())

    async def lag(self, group: str, topics: Sequence[str]) -> int:
        tps = await self.partitions(topics)
        committed = await self.admin.list_consumer_group_offsets(group, partitions=tps)
        ends = await self.probe.end_offsets(tps)
        total = 0
        for tp in tps:
            meta = committed.get(tp)
            position = meta.offset if meta is not None and meta.offset >= 0 else 0
            total += max(0, ends[tp] - position)
        return total


class ProcessWatch:
    """Resident memory (peak of the samples, and last) and CPU seconds of processes."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak_rss: dict[str, int] = dict.fromkeys(pids, 0)
        self.last_rss: dict[str, int] = dict.fromkeys(pids, 0)
        self._cpu0 = {name: self._cpu(p) for name, p in self.procs.items()}

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        try:
            t = proc.cpu_times()
            total = t.user + t.system
            for child in proc.children(recursive=True):
                ct = child.cpu_times()
                total += ct.user + ct.system
            return float(total)
        except psutil.Error:
            return 0.0

    def sample(self) -> None:
        for name, proc in self.procs.items():
            try:
                rss = int(proc.memory_info().rss)
            except psutil.Error:
                continue
            self.last_rss[name] = rss
            self.peak_rss[name] = max(self.peak_rss[name], rss)

    def cpu_seconds(self) -> dict[str, float]:
        return {name: self._cpu(p) - self._cpu0[name] for name, p in self.procs.items()}


async def outbox_empty(database_url: str) -> bool:
    """No row waits in the service's outbox. Polled while a phase settles, so the bench's own
    look at the system it measures stays cheap: an existence check, not a count of a table
    that can hold hundreds of thousands of rows in a history import."""
    conn = await asyncpg.connect(database_url)
    try:
        return not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM outbox)")
    finally:
        await conn.close()


async def outboxes_empty(database_urls: Iterable[str]) -> bool:
    """Every one of these outboxes empty; stops looking at the first that is not."""
    for url in database_urls:
        if not await outbox_empty(url):
            return False
    return True


async def database_bytes(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()


def infra_pids(state_dir: str) -> dict[str, int]:
    """The broker's and PostgreSQL's main pids, to count their CPU too."""
    from pathlib import Path

    from devstack.common import read_pidfile
    from devstack.postgres import LocalPostgres

    found: dict[str, int] = {}
    record = read_pidfile(Path(state_dir), "kafka")
    if record is not None:
        found["kafka"] = record.pid
    pg = LocalPostgres(Path(state_dir), port=0, progress=lambda _: None).running_pid()
    if pg is not None:
        found["postgres"] = pg
    return found
