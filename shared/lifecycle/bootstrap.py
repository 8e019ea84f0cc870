"""Erasures already on `member-lifecycle`, read before a database's first batch.

A replay of `member-activity` from offset 0 into a fresh database must not re-create, even for
a moment, a person erased later in the log; so before its first batch a service reads the whole
lifecycle topic with a raw aiokafka consumer (no group, no commits: FastStream's subscriber is
for the service's own consumption) and remembers every erased id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared.cloudevents import DecodeError, Envelope, decode
from shared.contracts import MemberErasedV1, MemberMergedV1
from shared.lifecycle.rewrite import erased_in_log
from shared.lifecycle.store import is_bootstrapped, record_bootstrap
from shared.postgres import Connection
from shared.settings import Settings
from shared.topics import MEMBER_LIFECYCLE

log = logging.getLogger(__name__)


async def topic_partitions(bootstrap_servers: str, topic: str) -> list[TopicPartition]:
    """The partitions of a topic, from the cluster's metadata (a consumer that has not
    subscribed does not know them)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="flywheel-admin")
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [
        TopicPartition(d["topic"], int(p["partition"]))
        for d in described
        if d["error_code"] == 0
        for p in sorted(d["partitions"], key=lambda p: int(p["partition"]))
    ]


async def read_lifecycle(settings: Settings, timeout_s: float = 60.0) -> list[Envelope]:
    """Every merge and erasure on `member-lifecycle`, up to its end now."""
    topic = settings.topic(MEMBER_LIFECYCLE.name)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="flywheel-lifecycle-bootstrap",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    found: list[Envelope] = []
    started = False
    try:
        await consumer.start()
        started = True
        async with asyncio.timeout(timeout_s):
            tps = await topic_partitions(settings.kafka_bootstrap_servers, topic)
            if not tps:
                raise KafkaError(f"{topic} has no partitions (not created yet?)")
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            for tp, start in (await consumer.beginning_offsets(tps)).items():
                consumer.seek(tp, start)  # explicit: a pending offset reset must not win
            pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
            while pending:
                batch = await consumer.getmany(*pending, timeout_ms=500)
                for records in batch.values():
                    for r in records:
                        if r.value is None:
                            continue
                        try:
                            envelope = decode(
                                topic=r.topic,
                                partition=r.partition,
                                offset=r.offset,
                                key=r.key,
                                value=r.value,
                                headers=r.headers,
                            )
                        except DecodeError:
                            continue  # the consumer dead-letters it in its turn
                        if isinstance(envelope.data, MemberMergedV1 | MemberErasedV1):
                            found.append(envelope)
                pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
    except (KafkaError, TimeoutError) as exc:
        # transient for the batch processor: retried with back-off, never dead-lettered
        raise ConnectionError(f"reading {topic} for erasures failed: {exc!r}") from exc
    finally:
        if started:
            await consumer.stop()
    return found


class ErasureBootstrap:
    """Before a database's first batch, remember every member already erased on the log."""

    def __init__(
        self,
        settings: Settings,
        reader: Callable[[Settings], Awaitable[list[Envelope]]] = read_lifecycle,
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.done = False

    async def ensure(self, conn: Connection) -> None:
        if self.done:
            return
        if await is_bootstrapped(conn):
            self.done = True  # committed by an earlier batch (or another replica)
            return
        events = await self.reader(self.settings)
        data = [e.data for e in events if isinstance(e.data, MemberMergedV1 | MemberErasedV1)]
        erased = erased_in_log(data)
        times: Mapping[str, datetime] = {
            e.member_id: e.occurred_at for e in data if isinstance(e, MemberErasedV1)
        }
        await record_bootstrap(conn, erased, max(times.values()) if erased else None)
        if erased:
            log.info("remembered %d erased member id(s) from member-lifecycle", len(erased))
