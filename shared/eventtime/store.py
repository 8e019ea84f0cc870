"""Where a service keeps its clock: one row per input partition, and the clock itself.

Replicas of one service share its database, so each writes the rows of the partitions it owns
and every replica reads all of them: the clock is the same whichever replica computes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from shared.eventtime.clock import PartitionProgress
from shared.postgres import Connection


async def record_progress(
    conn: Connection,
    newest: Mapping[tuple[str, int], datetime],
    caught_up: Mapping[tuple[str, int], bool],
    now: datetime,
) -> None:
    """Raise each partition's event time to the newest seen (never lower it) and note which
    assigned partitions were read to their log end."""
    keys = sorted(set(newest) | set(caught_up))
    if not keys:
        return
    await conn.executemany(
        "INSERT INTO event_clock (topic, partition, event_time, caught_up_since)"
        " VALUES ($1, $2, $3, CASE WHEN $4 THEN $5::timestamptz END)"
        " ON CONFLICT (topic, partition) DO UPDATE SET"
        "  event_time = greatest(event_clock.event_time, EXCLUDED.event_time),"
        "  caught_up_since = CASE"
        "    WHEN $3::timestamptz IS NOT NULL THEN EXCLUDED.caught_up_since"  # it had records
        "    WHEN $4 THEN coalesce(event_clock.caught_up_since, $5::timestamptz)"
        "    ELSE NULL END",
        [
            (
                topic,
                partition,
                newest.get((topic, partition)),
                caught_up.get((topic, partition), False),
                now,
            )
            for topic, partition in keys
        ],
    )


async def load_progress(conn: Connection) -> dict[tuple[str, int], PartitionProgress]:
    rows = await conn.fetch("SELECT topic, partition, event_time, caught_up_since FROM event_clock")
    return {
        (r["topic"], r["partition"]): PartitionProgress(
            r["topic"], r["partition"], r["event_time"], r["caught_up_since"]
        )
        for r in rows
    }


async def stored_clock(conn: Connection) -> datetime | None:
    """The service clock as last stored; the row is locked until the transaction ends, so two
    replicas advance it one after the other."""
    value: datetime | None = await conn.fetchval(
        "SELECT event_time FROM watermark WHERE singleton FOR UPDATE"
    )
    return value


async def store_clock(conn: Connection, value: datetime) -> None:
    await conn.execute(
        "INSERT INTO watermark (event_time) VALUES ($1) ON CONFLICT (singleton) DO UPDATE"
        " SET event_time = greatest(watermark.event_time, EXCLUDED.event_time)",
        value,
    )
