"""The outbox relay: publishes what a service's transactions wrote to its outbox table.

One relay per database publishes at a time (a PostgreSQL advisory lock elects it), in outbox
order, so events about one member keep their order per partition. Rows are deleted only once
the broker has acknowledged them (acks=all), so a crash re-sends rather than loses; the
re-sent events carry the same ids and consumers drop them.

A round of sends is bounded (`round_timeout_s`): a producer that bootstrapped from a broker
still starting up can be left with no broker to ask and wait forever (aiokafka logs "Unable to
update metadata from []"). The relay then closes that producer and starts a fresh one; the
rows are still there, and go again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Callable

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.cloudevents import BROADCAST
from shared.postgres import SERVER_SETTINGS, TRANSIENT_DB_ERRORS
from shared.telemetry import traced_send

log = logging.getLogger(__name__)

VACUUM_EVERY_ROWS = 10_000
"""The relay vacuums the outbox after deleting this many rows. A deleted row stays in the
table and its index until a vacuum; the relay's next read (`ORDER BY seq LIMIT`) steps over
every one of them first. Autovacuum comes at most once a minute per database (and later on a
busy machine), and in a 300,000-activity history import engagement's relay deleted 500,000
rows in three minutes: its reads took 18 ms each, 32 s in all. Vacuuming this often keeps
them to a few pages (3 s in all; the vacuums 1 s), and the import took 5 % less CPU per
activity (docs/PERFORMANCE.md, phase 7's seventh round)."""

ROUND_TIMEOUT_S = 120.0
"""How long one round of sends (or a producer's start) may take before the producer is given
up: well beyond the producer's own 30 s request timeout, so a slow broker is waited for and
only a stuck client is replaced."""


class OutboxRelay:
    def __init__(
        self,
        *,
        service: str,
        database_url: str,
        producer_factory: Callable[[], AIOKafkaProducer],
        batch_size: int = 1000,
        poll_interval_s: float = 0.05,
        retry_max_s: float = 10.0,
        topic_prefix: str = "",
        round_timeout_s: float = ROUND_TIMEOUT_S,
        vacuum_every_rows: int = VACUUM_EVERY_ROWS,
    ) -> None:
        """`vacuum_every_rows`: see `VACUUM_EVERY_ROWS`; 0 leaves the outbox to autovacuum."""
        self.service = service
        self._vacuum_every_rows = vacuum_every_rows
        self._deleted = 0  # rows deleted since the last vacuum
        self._round_timeout_s = round_timeout_s
        self._database_url = database_url
        self._producer_factory = producer_factory
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._retry_max_s = retry_max_s
        self._topic_prefix = topic_prefix
        self._lock_key = zlib.crc32(f"outbox:{service}".encode())
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.is_leader = False

    def wake(self) -> None:
        """Called after a transaction that wrote outbox rows commits: publish without waiting."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.service}")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Publish what is pending (bounded by timeout_s), then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            log.warning(
                "outbox relay did not drain within %.1f s; rows stay for next start", timeout_s
            )
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        delay = 0.2
        while not self._stopping or self.is_leader:
            try:
                await self._lead()
                return
            except asyncio.CancelledError:
                raise
            except (*TRANSIENT_DB_ERRORS, KafkaError) as exc:
                self.is_leader = False
                if self._stopping:
                    log.warning("outbox relay stopping with a transient fault: %s", exc)
                    return
                log.warning("outbox relay: %s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)

    async def _lead(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(
            self._database_url, server_settings=SERVER_SETTINGS
        )
        producer: AIOKafkaProducer | None = None
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", self._lock_key):
                if self._stopping:
                    return  # another replica's relay publishes our rows
                await asyncio.sleep(1.0)
            self.is_leader = True
            producer = self._producer_factory()
            await asyncio.wait_for(producer.start(), self._round_timeout_s)
            while True:
                sent = await self._publish_once(conn, producer)
                if sent:
                    continue
                if self._stopping:
                    self.is_leader = False
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
        finally:
            if producer is not None:
                await close_producer(producer, min(10.0, self._round_timeout_s))
            await conn.close()

    async def _publish_once(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
        rows = await conn.fetch(
            "SELECT seq, topic, key, value, header_names, header_values, partition FROM outbox"
            " ORDER BY seq LIMIT $1",
            self._batch_size,
        )
        if not rows:
            return 0
        await asyncio.wait_for(self._send(producer, rows), self._round_timeout_s)
        # By id, not by range: a transaction that took a lower seq may commit after we read.
        await conn.execute(
            "DELETE FROM outbox WHERE seq = ANY($1::bigint[])", [row["seq"] for row in rows]
        )
        self.published += len(rows)
        self._deleted += len(rows)
        if self._vacuum_every_rows and self._deleted >= self._vacuum_every_rows:
            self._deleted = 0
            await self._vacuum(conn)
        return len(rows)

    async def _vacuum(self, conn: asyncpg.Connection) -> None:
        """`VACUUM_EVERY_ROWS`. SKIP_LOCKED: not at all when autovacuum (or anyone) holds the
        table's vacuum lock, rather than wait for it with the next rows unsent. A relay whose
        role does not own the table gets a warning from PostgreSQL and nothing is done. Any
        other refusal (a statement timeout, say) turns it off for this relay: it only saves
        time, and must never stop the publishing."""
        try:
            await conn.execute("VACUUM (SKIP_LOCKED) outbox")
        except asyncpg.PostgresError as exc:
            if isinstance(exc, TRANSIENT_DB_ERRORS):
                raise
            log.warning("outbox relay: vacuuming the outbox failed (%s); not tried again", exc)
            self._vacuum_every_rows = 0

    async def _send(self, producer: AIOKafkaProducer, rows: list[asyncpg.Record]) -> None:
        """Every row sent and acknowledged, in outbox order."""
        futures = [
            await traced_send(  # a producer span continuing the row's stored trace context
                producer,
                topic,
                value=row["value"],
                key=row["key"],
                headers=list(zip(row["header_names"], row["header_values"], strict=True)),
                partition=partition,
            )
            for row in rows
            for topic in [self._topic_prefix + row["topic"]]
            for partition in await partitions_of(producer, topic, row["partition"])
        ]
        await asyncio.gather(*futures)


async def close_producer(producer: AIOKafkaProducer, timeout_s: float = 10.0) -> None:
    """Stop a producer; one that cannot finish stopping (a stuck client) has its connections
    closed, so nothing it still holds is sent after the rows go again through a fresh one."""
    try:
        await asyncio.wait_for(producer.stop(), timeout_s)
    except Exception as exc:
        log.warning("a producer did not stop (%r); closing its connections", exc)
        with contextlib.suppress(Exception):
            await producer.client.close()


async def partitions_of(
    producer: AIOKafkaProducer, topic: str, partition: int | None
) -> list[int | None]:
    """Where one record goes: by key (None), one partition, or every one (BROADCAST)."""
    if partition != BROADCAST:
        return [partition]
    return sorted(await producer.partitions_for(topic))
