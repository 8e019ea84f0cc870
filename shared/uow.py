"""The unit of work: one PostgreSQL transaction per batch holding the inbox check, the state
change and the outbox rows. Either all of it is durable or none of it is."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import asyncpg

from shared.cloudevents import Envelope, OutgoingRecord
from shared.eventtime import ClockReading
from shared.postgres import Connection


class UnitOfWork:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._outbox: list[OutgoingRecord] = []
        # How an emitted record is finished before it is stored (telemetry adds trace context).
        self.stamp: Callable[[OutgoingRecord], OutgoingRecord] = lambda record: record
        self.duplicates = 0
        self.clock: ClockReading | None = None
        """The service clock before and after this unit of work's events (None: the service
        keeps no clock, e.g. the gateway's read model)."""

    async def claim(self, envelopes: Sequence[Envelope]) -> list[Envelope]:
        """Record the events in the inbox; return those not applied before, in order.

        A duplicate inside the batch itself (same id twice) also counts as applied once.
        """
        if not envelopes:
            return []
        ids = [e.id for e in envelopes]
        rows = await self.conn.fetch(
            "INSERT INTO inbox (event_id) SELECT DISTINCT unnest($1::text[])"
            " ON CONFLICT DO NOTHING RETURNING event_id",
            ids,
        )
        fresh = {r["event_id"] for r in rows}
        result: list[Envelope] = []
        for envelope in envelopes:
            if envelope.id in fresh:
                fresh.discard(envelope.id)
                result.append(envelope)
        self.duplicates += len(envelopes) - len(result)
        return result

    def emit(self, record: OutgoingRecord) -> None:
        self._outbox.append(self.stamp(record))

    @property
    def emitted(self) -> int:
        return len(self._outbox)

    async def flush(self) -> None:
        if not self._outbox:
            return
        # COPY, not one INSERT per row: a batch may emit thousands of rows, and the server
        # parses and plans none of them. Rows keep their order (seq is assigned as copied).
        await self.conn.copy_records_to_table(
            "outbox",
            columns=_OUTBOX_COLUMNS,
            records=[
                (
                    r.event_id,
                    r.topic,
                    r.key,
                    r.value,
                    [h[0] for h in r.headers],
                    [h[1] for h in r.headers],
                    r.partition,
                )
                for r in self._outbox
            ],
        )
        self._outbox.clear()


_OUTBOX_COLUMNS = (
    "event_id",
    "topic",
    "key",
    "value",
    "header_names",
    "header_values",
    "partition",
)


@asynccontextmanager
async def unit_of_work(pool: asyncpg.Pool) -> AsyncIterator[UnitOfWork]:
    async with pool.acquire() as conn, conn.transaction():
        uow = UnitOfWork(conn)
        yield uow
        await uow.flush()
