"""What the webhook router remembers: deliveries already published, and who started a thread.

Delivery ids are remembered *after* the activities are published, so a crash in between
means a redelivery is published again, never lost; the activities' event ids are derived
from the platform objects, so that second publication (or two replicas racing on one
delivery) carries the same ids and consumers drop it. Deliveries are forgotten after
`inbound_webhook_dedupe_days`; thread authors are kept (a reply can come years later).

Both stores raise `Unavailable` when they cannot answer; the receiver then carries on
without them (see receiver.py). `erase_members` is the webhooks' part of an erasure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Protocol

import asyncpg

from services.gateway.http.problems import Unavailable
from services.gateway.webhooks.mapping import ThreadStarter
from shared.postgres import TRANSIENT_DB_ERRORS, Connection

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0


class WebhookStore(Protocol):
    async def seen(self, source: str, delivery_id: str) -> bool:
        """Whether this delivery's activities were published already."""
        ...

    async def record(
        self,
        source: str,
        delivery_id: str,
        event: str,
        activity_ids: Sequence[str],
        thread_authors: Mapping[str, str],
    ) -> None:
        """The delivery is published; these threads (id -> author's member id) started."""
        ...

    async def remember_starters(self, source: str, starters: Mapping[str, ThreadStarter]) -> None:
        """Who started these threads, and whether they are staff (what a delivery said of
        them without an activity of its own); a known staff flag is not unset by a None."""
        ...

    async def starters(self, source: str, thread_ids: Collection[str]) -> dict[str, ThreadStarter]:
        """What is known of these threads' starters (threads never seen are left out)."""
        ...

    async def thread_authors(self, source: str, thread_ids: Collection[str]) -> dict[str, str]:
        """The known authors of these threads."""
        ...


class InMemoryWebhookStore:
    """For tests and tools: the same behaviour, in a dict."""

    def __init__(self) -> None:
        self.deliveries: dict[tuple[str, str], tuple[str, list[str]]] = {}
        self.threads: dict[tuple[str, str], str] = {}
        self.flags: dict[tuple[str, str], tuple[bool | None, bool | None]] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise Unavailable("database", "ConnectionRefusedError")

    async def seen(self, source: str, delivery_id: str) -> bool:
        self._check()
        return (source, delivery_id) in self.deliveries

    async def record(
        self,
        source: str,
        delivery_id: str,
        event: str,
        activity_ids: Sequence[str],
        thread_authors: Mapping[str, str],
    ) -> None:
        self._check()
        self.deliveries.setdefault((source, delivery_id), (event, list(activity_ids)))
        for thread, author in thread_authors.items():
            self.threads.setdefault((source, thread), author)

    async def thread_authors(self, source: str, thread_ids: Collection[str]) -> dict[str, str]:
        self._check()
        return {t: a for (s, t), a in self.threads.items() if s == source and t in thread_ids}

    async def remember_starters(self, source: str, starters: Mapping[str, ThreadStarter]) -> None:
        self._check()
        for thread_id, starter in starters.items():
            self.threads.setdefault((source, thread_id), starter.member_id)
            held = self.flags.get((source, thread_id), (None, None))
            self.flags[(source, thread_id)] = (
                starter.is_staff if starter.is_staff is not None else held[0],
                starter.is_question if starter.is_question is not None else held[1],
            )

    async def starters(self, source: str, thread_ids: Collection[str]) -> dict[str, ThreadStarter]:
        self._check()
        return {
            t: ThreadStarter(a, *self.flags.get((s, t), (None, None)))
            for (s, t), a in self.threads.items()
            if s == source and t in thread_ids
        }


_RECORD_DELIVERY = """
INSERT INTO webhook_deliveries (source, delivery_id, event, activity_ids)
VALUES ($1, $2, $3, $4::text[])
ON CONFLICT (source, delivery_id) DO NOTHING
"""

_RECORD_THREADS = """
INSERT INTO webhook_thread_authors (source, thread_id, author_member_id)
SELECT $1, t.thread_id, t.author FROM unnest($2::text[], $3::text[]) AS t(thread_id, author)
ON CONFLICT (source, thread_id) DO NOTHING
"""

_REMEMBER_STARTERS = """
INSERT INTO webhook_thread_authors
    (source, thread_id, author_member_id, author_is_staff, is_question)
SELECT $1, t.thread_id, t.author, t.staff, t.question
FROM unnest($2::text[], $3::text[], $4::bool[], $5::bool[]) AS t(thread_id, author, staff, question)
ON CONFLICT (source, thread_id) DO UPDATE SET
    author_is_staff = coalesce(EXCLUDED.author_is_staff, webhook_thread_authors.author_is_staff),
    is_question = coalesce(EXCLUDED.is_question, webhook_thread_authors.is_question)
"""

_PRUNE = "DELETE FROM webhook_deliveries WHERE received_at < now() - make_interval(days => $1)"


class PgWebhookStore:
    """Over the gateway's own database (migrations/002_webhook_deliveries.sql); the pool
    appears at start-up."""

    def __init__(
        self, pool: Callable[[], asyncpg.Pool | None], *, retention_days: int = 30
    ) -> None:
        self._pool = pool
        self.retention_days = retention_days
        self._pruned_at = 0.0

    def _ready_pool(self) -> asyncpg.Pool:
        pool = self._pool()
        if pool is None:
            raise Unavailable("database", "the gateway's database is not started yet")
        return pool

    async def seen(self, source: str, delivery_id: str) -> bool:
        try:
            async with self._ready_pool().acquire() as conn:
                found = await conn.fetchval(
                    "SELECT 1 FROM webhook_deliveries WHERE source = $1 AND delivery_id = $2",
                    source,
                    delivery_id,
                )
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        return found is not None

    async def record(
        self,
        source: str,
        delivery_id: str,
        event: str,
        activity_ids: Sequence[str],
        thread_authors: Mapping[str, str],
    ) -> None:
        prune = time.monotonic() - self._pruned_at > PRUNE_EVERY_S
        try:
            async with self._ready_pool().acquire() as conn, conn.transaction():
                await conn.execute(_RECORD_DELIVERY, source, delivery_id, event, activity_ids)
                if thread_authors:
                    await conn.execute(
                        _RECORD_THREADS,
                        source,
                        list(thread_authors),
                        list(thread_authors.values()),
                    )
                if prune:
                    deleted = await conn.execute(_PRUNE, self.retention_days)
                    log.debug("pruned webhook deliveries: %s", deleted)
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        if prune:
            self._pruned_at = time.monotonic()

    async def thread_authors(self, source: str, thread_ids: Collection[str]) -> dict[str, str]:
        if not thread_ids:
            return {}
        try:
            async with self._ready_pool().acquire() as conn:
                rows = await conn.fetch(
                    "SELECT thread_id, author_member_id FROM webhook_thread_authors"
                    " WHERE source = $1 AND thread_id = ANY($2::text[])",
                    source,
                    list(thread_ids),
                )
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        return {r["thread_id"]: r["author_member_id"] for r in rows}

    async def remember_starters(self, source: str, starters: Mapping[str, ThreadStarter]) -> None:
        if not starters:
            return
        try:
            async with self._ready_pool().acquire() as conn:
                await _remember_starters(conn, source, starters)
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc

    async def starters(self, source: str, thread_ids: Collection[str]) -> dict[str, ThreadStarter]:
        if not thread_ids:
            return {}
        try:
            async with self._ready_pool().acquire() as conn:
                rows = await conn.fetch(
                    "SELECT thread_id, author_member_id, author_is_staff, is_question"
                    " FROM webhook_thread_authors"
                    " WHERE source = $1 AND thread_id = ANY($2::text[])",
                    source,
                    list(thread_ids),
                )
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", type(exc).__name__) from exc
        return {
            r["thread_id"]: ThreadStarter(
                r["author_member_id"], r["author_is_staff"], r["is_question"]
            )
            for r in rows
        }


async def _remember_starters(
    conn: Connection, source: str, starters: Mapping[str, ThreadStarter]
) -> None:
    await conn.execute(
        _REMEMBER_STARTERS,
        source,
        list(starters),
        [s.member_id for s in starters.values()],
        [s.is_staff for s in starters.values()],
        [s.is_question for s in starters.values()],
    )


async def erase_members(conn: Connection, ids: Collection[str], at: datetime) -> None:
    """Inbound webhooks remember who started a thread, to credit later replies: forget the
    erased members' threads (composed in services/gateway/member_state.py)."""
    await conn.execute(
        "DELETE FROM webhook_thread_authors WHERE author_member_id = ANY($1::text[])",
        sorted(ids),
    )
