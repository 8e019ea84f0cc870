"""Event time: the service-wide watermark, advanced by the events themselves."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from shared.cloudevents import Envelope
from shared.postgres import Connection


async def advance_watermark(
    conn: Connection, events: Iterable[Envelope], allowed_lateness: timedelta
) -> datetime | None:
    """Move the stored newest event time forward (never back) and return the watermark:
    the time up to which every event is assumed to have arrived."""
    newest = max((e.time for e in events), default=None)
    if newest is not None:
        stored = await conn.fetchval(
            "INSERT INTO watermark (event_time) VALUES ($1) ON CONFLICT (singleton) DO UPDATE"
            " SET event_time = greatest(watermark.event_time, EXCLUDED.event_time)"
            " RETURNING event_time",
            newest,
        )
    else:
        stored = await conn.fetchval("SELECT event_time FROM watermark")
    return None if stored is None else stored - allowed_lateness
