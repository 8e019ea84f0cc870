"""`Directory`: the directory's reads over the gateway's pool, as the API routes and the
dashboard's pages both use them (so a page shows exactly what the API answers)."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from services.gateway.directory import query as q
from services.gateway.directory import store
from services.gateway.directory.models import (
    Leaderboards,
    MemberPage,
    MemberProfile,
    Operations,
    Series,
)
from services.gateway.http.problems import Unavailable
from shared.postgres import TRANSIENT_DB_ERRORS, Connection
from shared.settings import Settings

if TYPE_CHECKING:
    from services.gateway.flywheel.models import FlywheelReport


CLOCK_TTL_S = 5.0


class Directory:
    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool | None],
        settings: Settings,
        *,
        group: str = "gateway-journey",
        topics: Sequence[str] = (),
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._group = settings.topic_prefix + group
        self._topics = [settings.topic_prefix + t for t in topics]
        self._cached_clock: tuple[float, q.CohortClock] | None = None

    def _ready(self) -> asyncpg.Pool:
        return store.ready(self._pool)

    async def _clock(self, conn: Connection) -> q.CohortClock:
        """The cohort clock (the read model's now and the core's lowest score), reused for
        CLOCK_TTL_S: two aggregate queries saved on every page of a busy directory."""
        cached = self._cached_clock
        if cached is not None and time.monotonic() - cached[0] < CLOCK_TTL_S:
            return cached[1]
        clock = await store.cohort_clock(conn)
        self._cached_clock = (time.monotonic(), clock)
        return clock

    async def page(self, query: q.Query) -> MemberPage:
        try:
            async with self._ready().acquire() as conn:
                return await store.member_page(conn, query, await self._clock(conn))
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc

    async def check(self) -> None:
        """Fails before a streamed export starts (a 503 then, not a truncated file)."""
        try:
            async with self._ready().acquire() as conn:
                await conn.fetchval("SELECT 1")
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc

    async def csv_chunks(self, query: q.Query) -> AsyncIterator[str]:
        """The export as CSV text, a header row first, one chunk of rows at a time."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(q.CSV_COLUMNS)
        yield buffer.getvalue()
        async with self._ready().acquire() as conn:
            clock = await self._clock(conn)
        async for rows in store.export_rows(self._ready(), query, clock=clock):
            buffer.seek(0)
            buffer.truncate()
            writer.writerows(q.csv_values(r) for r in rows)
            yield buffer.getvalue()

    async def profile(self, member_id: str) -> MemberProfile | None:
        try:
            async with self._ready().acquire() as conn:
                return await store.member_profile(conn, member_id, await self._clock(conn))
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc

    async def leaderboards(
        self, start: datetime | None, end: datetime | None, limit: int = 20
    ) -> Leaderboards:
        try:
            async with self._ready().acquire() as conn:
                return await store.leaderboards(conn, start, end, limit)
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc

    async def series(self, start: datetime | None, end: datetime | None) -> Series:
        try:
            async with self._ready().acquire() as conn:
                return await store.series(conn, start, end)
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc

    async def now(self) -> datetime | None:
        try:
            async with self._ready().acquire() as conn:
                return await store.read_model_now(conn)
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc

    async def operations(self) -> Operations:
        try:
            async with self._ready().acquire() as conn:
                backlog, watermark = await store.read_model_ops(conn)
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        lag, dead, error = await store.broker_figures(self._settings, self._group, self._topics)
        return store.ops_model(lag, dead, error, backlog, watermark)

    async def flywheel(self, start: datetime | None, end: datetime | None) -> FlywheelReport:
        """GET /v1/flywheel's body, for the dashboard (the same functions)."""
        from services.gateway.flywheel.store import flywheel_report

        try:
            async with self._ready().acquire() as conn:
                report = await flywheel_report(conn, start, end)
                report.cohort_retention = await store.cohort_retention(conn)
                return report
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
