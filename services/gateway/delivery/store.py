"""The SQL of outbound delivery: subscriptions, the deliveries queue and its attempt log.

Every statement is set-based or touches one row, and each works on any connection (a pool's
or a batch's unit of work), so several gateway replicas can share the tables: the sender
claims a delivery with `FOR UPDATE SKIP LOCKED` and a lease, and only the lease holder may
record its outcome.

It stays one module: the three tables are one queue (a subscription's deliveries and their
attempts cascade from it), and the claim, lease and outcome statements must be read together.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from shared.postgres import Connection

Status = Literal["pending", "delivered", "dead"]
Outcome = Literal["delivered", "failed", "dead"]


@dataclass(frozen=True)
class SubscriptionRow:
    id: str
    url: str
    event_types: tuple[str, ...]
    secret: str
    description: str | None
    created_at: datetime


@dataclass(frozen=True)
class QueuedEvent:
    """One event of a fan-out batch, ready to be queued for every matching subscription."""

    event_id: str
    event_type: str
    member_key: str
    event_time: datetime
    body: str


@dataclass(frozen=True)
class ClaimedDelivery:
    """What the sender needs for one attempt, and the lease that lets it record the outcome."""

    id: int
    subscription_id: str
    url: str
    secret: str
    event_id: str
    event_type: str
    body: str
    attempt: int
    pending_since: datetime
    lease_token: uuid.UUID


@dataclass(frozen=True)
class AttemptRow:
    attempt: int
    attempted_at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None
    outcome: Outcome


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    subscription_id: str
    event_id: str
    event_type: str
    member_key: str
    event_time: datetime
    status: Status
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
    attempt_log: tuple[AttemptRow, ...] = ()


# ---- subscriptions -----------------------------------------------------------------------


def _subscription(r: asyncpg.Record) -> SubscriptionRow:
    return SubscriptionRow(
        id=r["id"],
        url=r["url"],
        event_types=tuple(r["event_types"]),
        secret=r["secret"],
        description=r["description"],
        created_at=r["created_at"],
    )


async def create_subscription(
    conn: Connection, *, url: str, event_types: Sequence[str], secret: str, description: str | None
) -> SubscriptionRow:
    row = await conn.fetchrow(
        "INSERT INTO outbound_subscriptions (id, url, event_types, secret, description)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING *",
        f"sub_{uuid.uuid4().hex}",
        url,
        list(event_types),
        secret,
        description,
    )
    assert row is not None  # RETURNING always returns the row
    return _subscription(row)


async def list_subscriptions(conn: Connection) -> list[SubscriptionRow]:
    rows = await conn.fetch("SELECT * FROM outbound_subscriptions ORDER BY created_at, id")
    return [_subscription(r) for r in rows]


async def get_subscription(conn: Connection, subscription_id: str) -> SubscriptionRow | None:
    row = await conn.fetchrow("SELECT * FROM outbound_subscriptions WHERE id = $1", subscription_id)
    return _subscription(row) if row is not None else None


async def delete_subscription(conn: Connection, subscription_id: str) -> bool:
    """Its deliveries and their log go with it (and so does the secret)."""
    status = await conn.execute("DELETE FROM outbound_subscriptions WHERE id = $1", subscription_id)
    return bool(status.endswith(" 1"))


# ---- fan-out -----------------------------------------------------------------------------


async def subscribed_types(conn: Connection) -> frozenset[str]:
    """The event types at least one subscription wants."""
    rows = await conn.fetch("SELECT DISTINCT unnest(event_types) AS t FROM outbound_subscriptions")
    return frozenset(r["t"] for r in rows)


async def queue_deliveries(conn: Connection, events: Sequence[QueuedEvent]) -> int:
    """One delivery per (subscription wanting the event's type, event), in event order, so
    delivery ids follow each member's order. An event queued before for a subscription is not
    queued again. Returns how many were queued."""
    if not events:
        return 0
    status = await conn.execute(
        """
        INSERT INTO outbound_deliveries
            (subscription_id, event_id, event_type, member_key, event_time, body)
        SELECT s.id, e.event_id, e.event_type, e.member_key, e.event_time, e.body
        FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[])
             WITH ORDINALITY AS e(event_id, event_type, member_key, event_time, body, ord)
        JOIN outbound_subscriptions s ON e.event_type = ANY (s.event_types)
        ORDER BY e.ord, s.id
        ON CONFLICT (subscription_id, event_id) DO NOTHING
        """,
        [e.event_id for e in events],
        [e.event_type for e in events],
        [e.member_key for e in events],
        [e.event_time for e in events],
        [e.body for e in events],
    )
    return int(status.rsplit(" ", 1)[-1])


async def forget_members(conn: Connection, member_ids: Sequence[str], *, keep_type: str) -> int:
    """Right to erasure: delete every delivery about these members, whatever its status (a
    pending one must not go out any more), except those of `keep_type` (the erasure notice
    itself). "About" is keyed by them, or naming them anywhere in the event's data (the helped
    member of a peer-help signal, a referrer). Returns how many were deleted."""
    if not member_ids:
        return 0
    status = await conn.execute(
        """
        DELETE FROM outbound_deliveries d
        WHERE d.event_type <> $2
          AND EXISTS (
              SELECT 1 FROM unnest($1::text[]) AS m(id)
              WHERE d.member_key = m.id
                 OR jsonb_path_exists(
                        d.body::jsonb, '$.data.** ? (@ == $id)', jsonb_build_object('id', m.id)))
        """,
        list(member_ids),
        keep_type,
    )
    return int(status.rsplit(" ", 1)[-1])


async def prune(conn: Connection, *, older_than_s: float) -> int:
    """Drop finished deliveries (and their attempts) finished longer ago than that."""
    status = await conn.execute(
        "DELETE FROM outbound_deliveries WHERE status <> 'pending'"
        " AND finished_at < now() - make_interval(secs => $1)",
        older_than_s,
    )
    return int(status.rsplit(" ", 1)[-1])


# ---- sending -----------------------------------------------------------------------------


async def claim_due(conn: Connection, *, limit: int, lease_s: float) -> list[ClaimedDelivery]:
    """Lease up to `limit` deliveries that are due and first in their member's queue.

    The head of a (subscription, member) queue is its oldest pending delivery; while it is in
    flight (leased) or waiting for its retry, the member's later deliveries wait too. A row
    another replica is claiming is skipped, and a lease re-checked after the lock, so each
    delivery has at most one attempt in flight.
    """
    rows = await conn.fetch(
        """
        WITH heads AS (
            SELECT DISTINCT ON (subscription_id, member_key)
                   id, next_attempt_at, leased_until
            FROM outbound_deliveries
            WHERE status = 'pending'
            ORDER BY subscription_id, member_key, id
        ), due AS (
            SELECT d.id FROM outbound_deliveries d
            WHERE d.id IN (
                SELECT id FROM heads
                WHERE next_attempt_at <= now()
                  AND (leased_until IS NULL OR leased_until < now())
                ORDER BY next_attempt_at, id
                LIMIT $1)
            FOR UPDATE SKIP LOCKED
        )
        UPDATE outbound_deliveries d
        SET leased_until = now() + make_interval(secs => $2),
            lease_token = gen_random_uuid(),
            attempts = d.attempts + 1
        FROM due, outbound_subscriptions s
        WHERE d.id = due.id AND s.id = d.subscription_id
          AND d.status = 'pending'
          AND (d.leased_until IS NULL OR d.leased_until < now())
        RETURNING d.id, d.subscription_id, s.url, s.secret, d.event_id, d.event_type, d.body,
                  d.attempts, d.pending_since, d.lease_token
        """,
        limit,
        lease_s,
    )
    return [
        ClaimedDelivery(
            id=r["id"],
            subscription_id=r["subscription_id"],
            url=r["url"],
            secret=r["secret"],
            event_id=r["event_id"],
            event_type=r["event_type"],
            body=r["body"],
            attempt=r["attempts"],
            pending_since=r["pending_since"],
            lease_token=r["lease_token"],
        )
        for r in rows
    ]


async def record_attempt(
    conn: Connection,
    delivery: ClaimedDelivery,
    *,
    attempted_at: datetime,
    outcome: Outcome,
    status_code: int | None,
    latency_ms: float,
    error: str | None,
    next_attempt_at: datetime | None,
) -> bool:
    """Log the attempt and move the delivery on (delivered, dead, or pending until
    `next_attempt_at`), only if we still hold its lease. False if we no longer do: the
    subscription was deleted, or the lease expired and someone else took over."""
    async with conn.transaction():
        done = outcome != "failed"
        updated = await conn.fetchval(
            """
            UPDATE outbound_deliveries
            SET status = CASE $3::text WHEN 'failed' THEN 'pending' ELSE $3::text END,
                next_attempt_at = coalesce($4::timestamptz, next_attempt_at),
                finished_at = CASE WHEN $5::boolean THEN $6::timestamptz ELSE NULL END,
                leased_until = NULL, lease_token = NULL,
                last_status_code = $7, last_error = $8
            WHERE id = $1 AND lease_token = $2
            RETURNING id
            """,
            delivery.id,
            delivery.lease_token,
            outcome,
            next_attempt_at,
            done,
            attempted_at,
            status_code,
            error,
        )
        if updated is None:
            return False
        await conn.execute(
            "INSERT INTO outbound_delivery_attempts"
            " (delivery_id, attempt, attempted_at, status_code, latency_ms, error, outcome)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            delivery.id,
            delivery.attempt,
            attempted_at,
            status_code,
            latency_ms,
            error,
            outcome,
        )
        return True


async def release(conn: Connection, delivery: ClaimedDelivery) -> None:
    """Give a lease back unused (shutting down before the attempt was made)."""
    await conn.execute(
        "UPDATE outbound_deliveries SET leased_until = NULL, lease_token = NULL,"
        " attempts = attempts - 1 WHERE id = $1 AND lease_token = $2",
        delivery.id,
        delivery.lease_token,
    )


async def next_due_in_s(conn: Connection) -> float | None:
    """Seconds until the earliest pending delivery is due (<= 0: now); None if none pends."""
    value = await conn.fetchval(
        "SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM outbound_deliveries"
        " WHERE status = 'pending'"
    )
    return float(value) if value is not None else None


# ---- the delivery log and replays ----------------------------------------------------------


def _delivery(row: asyncpg.Record, attempts: tuple[AttemptRow, ...] = ()) -> DeliveryRow:
    return DeliveryRow(
        id=row["id"],
        subscription_id=row["subscription_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        member_key=row["member_key"],
        event_time=row["event_time"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"] if row["status"] == "pending" else None,
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        attempt_log=attempts,
    )


_DELIVERY_COLUMNS = (
    "id, subscription_id, event_id, event_type, member_key, event_time, status, attempts,"
    " next_attempt_at, last_status_code, last_error, created_at, finished_at"
)


async def _attempt_logs(
    conn: Connection, delivery_ids: Sequence[int]
) -> dict[int, tuple[AttemptRow, ...]]:
    rows = await conn.fetch(
        "SELECT delivery_id, attempt, attempted_at, status_code, latency_ms, error, outcome"
        " FROM outbound_delivery_attempts WHERE delivery_id = ANY($1::bigint[])"
        " ORDER BY delivery_id, id",
        list(delivery_ids),
    )
    logs: dict[int, list[AttemptRow]] = {}
    for r in rows:
        logs.setdefault(r["delivery_id"], []).append(
            AttemptRow(
                attempt=r["attempt"],
                attempted_at=r["attempted_at"],
                status_code=r["status_code"],
                latency_ms=r["latency_ms"],
                error=r["error"],
                outcome=r["outcome"],
            )
        )
    return {k: tuple(v) for k, v in logs.items()}


async def list_deliveries(
    conn: Connection,
    subscription_id: str,
    *,
    status: Status | None,
    before_id: int | None,
    limit: int,
) -> list[DeliveryRow]:
    """Newest first; `before_id` pages further back."""
    rows = await conn.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM outbound_deliveries"
        " WHERE subscription_id = $1 AND ($2::text IS NULL OR status = $2)"
        " AND ($3::bigint IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
        subscription_id,
        status,
        before_id,
        limit,
    )
    logs = await _attempt_logs(conn, [r["id"] for r in rows])
    return [_delivery(r, logs.get(r["id"], ())) for r in rows]


async def get_delivery(conn: Connection, delivery_id: int) -> DeliveryRow | None:
    row = await conn.fetchrow(
        f"SELECT {_DELIVERY_COLUMNS} FROM outbound_deliveries WHERE id = $1", delivery_id
    )
    if row is None:
        return None
    logs = await _attempt_logs(conn, [delivery_id])
    return _delivery(row, logs.get(delivery_id, ()))


_REPLAY_SET = (
    "status = 'pending', attempts = 0, pending_since = now(), next_attempt_at = now(),"
    " finished_at = NULL"
)


async def replay_delivery(conn: Connection, delivery_id: int) -> bool:
    """Queue a delivered or dead delivery again (a pending one is simply made due now). It
    keeps its place in its member's queue: the member's later pending deliveries wait for it.
    """
    status = await conn.execute(
        f"UPDATE outbound_deliveries SET {_REPLAY_SET} WHERE id = $1 AND status <> 'pending'",
        delivery_id,
    )
    if status.endswith(" 1"):
        return True
    status = await conn.execute(
        "UPDATE outbound_deliveries SET next_attempt_at = now() WHERE id = $1", delivery_id
    )
    return bool(status.endswith(" 1"))


async def replay_range(
    conn: Connection,
    subscription_id: str,
    *,
    since: datetime,
    until: datetime,
    status: Literal["delivered", "dead"] | None,
) -> int:
    """Queue again every finished delivery of the subscription queued in [since, until)."""
    result = await conn.execute(
        f"UPDATE outbound_deliveries SET {_REPLAY_SET}"
        " WHERE subscription_id = $1 AND created_at >= $2 AND created_at < $3"
        " AND status <> 'pending' AND ($4::text IS NULL OR status = $4)",
        subscription_id,
        since,
        until,
        status,
    )
    return int(result.rsplit(" ", 1)[-1])
