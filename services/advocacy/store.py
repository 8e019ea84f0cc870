"""Advocacy SQL: set-based, one statement per kind of read or write per batch."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any, cast

import orjson

from services.advocacy.domain import (
    BatchResult,
    Contribution,
    ContributionKind,
    Feedback,
    Member,
    Referral,
    Snapshot,
)
from shared.postgres import Connection

_CONTRIBUTION_COLUMNS = "key, member_id, kind, weight, occurred_at, link, content_id, cause_id"


def _member(row: Any) -> Member:
    evidence = orjson.loads(row["evidence"])
    return Member(
        member_id=row["member_id"],
        stage=row["stage"],
        score=row["score"],
        counts=evidence["counts"],
        links=tuple(evidence["links"]),
    )


def _contribution(row: Any) -> Contribution:
    return Contribution(
        member_id=row["member_id"],
        kind=cast(ContributionKind, row["kind"]),
        weight=row["weight"],
        occurred_at=row["occurred_at"],
        cause_id=row["cause_id"],
        key=row["key"],
        link=row["link"],
        content_id=row["content_id"],
    )


def _columns(cs: Sequence[Contribution]) -> list[list[Any]]:
    """The unnest arrays of contributions, in _CONTRIBUTION_COLUMNS order."""
    return [
        [c.key for c in cs],
        [c.member_id for c in cs],
        [c.kind for c in cs],
        [c.weight for c in cs],
        [c.occurred_at for c in cs],
        [c.link for c in cs],
        [c.content_id for c in cs],
        [c.cause_id for c in cs],
    ]


class PgStore:
    """The advocacy database, inside the batch's transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def last_boundary(self) -> datetime | None:
        """The last champion review boundary passed."""
        value: datetime | None = await self.conn.fetchval("SELECT last_boundary FROM review_clock")
        return value

    async def earliest_contribution(self, until: datetime) -> datetime | None:
        """Where reviews start: the earliest contribution at or before `until`, credited or
        pending."""
        value: datetime | None = await self.conn.fetchval(
            "SELECT least("
            "(SELECT min(occurred_at) FROM contributions WHERE occurred_at <= $1),"
            " (SELECT min(occurred_at) FROM pending_contributions WHERE occurred_at <= $1))",
            until,
        )
        return value

    async def add_pending(self, contributions: Sequence[Contribution]) -> None:
        """Contributions on time: kept until the clock passes them. An act already credited
        is dropped; the same act twice keeps its earliest time (then the lower cause id)."""
        earliest: dict[str, Contribution] = {}
        for c in contributions:  # one row per key per statement (ON CONFLICT's rule)
            held = earliest.get(c.key)
            if held is None or (c.occurred_at, c.cause_id) < (held.occurred_at, held.cause_id):
                earliest[c.key] = c
        if not earliest:
            return
        await self.conn.execute(
            f"""
            INSERT INTO pending_contributions ({_CONTRIBUTION_COLUMNS})
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[],
                                 $5::timestamptz[], $6::text[], $7::text[], $8::text[])
                 AS u(key, member_id, kind, weight, occurred_at, link, content_id, cause_id)
            WHERE NOT EXISTS (SELECT 1 FROM contributions c WHERE c.key = u.key)
            ON CONFLICT (key) DO UPDATE SET
                member_id = EXCLUDED.member_id, kind = EXCLUDED.kind, weight = EXCLUDED.weight,
                occurred_at = EXCLUDED.occurred_at, link = EXCLUDED.link,
                content_id = EXCLUDED.content_id, cause_id = EXCLUDED.cause_id
            WHERE (EXCLUDED.occurred_at, EXCLUDED.cause_id)
                < (pending_contributions.occurred_at, pending_contributions.cause_id)
            """,
            *_columns(list(earliest.values())),
        )

    async def pending_until(self, until: datetime) -> list[Contribution]:
        rows = await self.conn.fetch(
            f"SELECT {_CONTRIBUTION_COLUMNS} FROM pending_contributions"
            " WHERE occurred_at <= $1 ORDER BY occurred_at, key",
            until,
        )
        return [_contribution(r) for r in rows]

    async def pending_keys(self, keys: Collection[str]) -> frozenset[str]:
        rows = await self.conn.fetch(
            "SELECT key FROM pending_contributions WHERE key = ANY($1::text[])", list(keys)
        )
        return frozenset(r["key"] for r in rows)

    async def snapshot(
        self,
        member_ids: Collection[str],
        keys: Collection[str],
        content_ids: Collection[str],
        window: tuple[datetime, datetime] | None,
    ) -> Snapshot:
        """The batch's members, plus (when reviews are due) every champion and every advocate
        with contributions in the review windows, and those members' contributions there."""
        start, end = window if window else (None, None)
        rows = await self.conn.fetch(
            """
            SELECT member_id, stage, score, evidence::text AS evidence FROM advocacy_members m
            WHERE m.member_id = ANY($1::text[])
               OR ($2::timestamptz IS NOT NULL AND (
                    m.stage = 'champion'
                    OR (m.stage IS NOT NULL AND EXISTS (
                        SELECT 1 FROM contributions c
                        WHERE c.member_id = m.member_id
                          AND c.occurred_at > $2 AND c.occurred_at <= $3))))
            """,
            list(member_ids),
            start,
            end,
        )
        members = {r["member_id"]: _member(r) for r in rows}
        seen: frozenset[str] = frozenset()
        if keys:
            seen = frozenset(
                r["key"]
                for r in await self.conn.fetch(
                    "SELECT key FROM contributions WHERE key = ANY($1::text[])", list(keys)
                )
            )
        engaged: dict[str, int] = {}
        if content_ids:
            engaged = {
                r["content_id"]: r["n"]
                for r in await self.conn.fetch(
                    "SELECT content_id, count(*)::int AS n FROM contributions"
                    " WHERE content_id = ANY($1::text[]) GROUP BY content_id",
                    list(content_ids),
                )
            }
        log: tuple[Contribution, ...] = ()
        if window:
            log = tuple(
                _contribution(r)
                for r in await self.conn.fetch(
                    f"SELECT {_CONTRIBUTION_COLUMNS} FROM contributions"
                    " WHERE member_id = ANY($1::text[]) AND occurred_at > $2 AND occurred_at <= $3",
                    sorted({*member_ids, *members}),
                    start,
                    end,
                )
            )
        return Snapshot(members=members, seen_keys=seen, engaged=engaged, log=log)

    async def save(
        self,
        result: BatchResult,
        last_boundary: datetime | None,
        settled: Collection[str] = (),
    ) -> None:
        """The new contributions, the changed members, the review clock if it moved, and the
        pending contributions the clock settled (`settled`: their keys) gone from waiting."""
        if settled:
            await self.conn.execute(
                "DELETE FROM pending_contributions WHERE key = ANY($1::text[])", list(settled)
            )
        await self._insert_contributions(result.credited)
        await self._upsert_members(result.members.values())
        if last_boundary is not None:
            await self.conn.execute(
                "INSERT INTO review_clock (last_boundary) VALUES ($1)"
                " ON CONFLICT (singleton) DO UPDATE SET last_boundary = EXCLUDED.last_boundary",
                last_boundary,
            )

    async def _insert_contributions(self, credited: Sequence[Contribution]) -> None:
        if not credited:
            return
        await self.conn.execute(
            f"""
            INSERT INTO contributions ({_CONTRIBUTION_COLUMNS})
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[],
                                 $5::timestamptz[], $6::text[], $7::text[], $8::text[])
            ON CONFLICT (key) DO NOTHING
            """,
            *_columns(credited),
        )

    async def _upsert_members(self, members: Iterable[Member]) -> None:
        members = list(members)
        if not members:
            return
        await self.conn.execute(
            """
            INSERT INTO advocacy_members (member_id, stage, score, evidence)
            SELECT m, s, sc, e::jsonb
            FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[]) AS u(m, s, sc, e)
            ON CONFLICT (member_id) DO UPDATE
                SET stage = EXCLUDED.stage, score = EXCLUDED.score, evidence = EXCLUDED.evidence
            """,
            [m.member_id for m in members],
            [m.stage for m in members],
            [m.score for m in members],
            [
                orjson.dumps({"counts": dict(sorted(m.counts.items())), "links": m.links}).decode()
                for m in members
            ],
        )

    # ---- merges and erasures ------------------------------------------------------------

    async def involving(
        self, member_ids: Collection[str], *, pending: bool = False
    ) -> list[Contribution]:
        """Every contribution credited to the members or naming them: as who engaged with a
        piece of content (the key's tail) or who joined through a referral. Merges and
        erasures are rare, so the scan of those two kinds is acceptable. `pending`: the ones
        still waiting for the clock instead."""
        table = "pending_contributions" if pending else "contributions"
        rows = await self.conn.fetch(
            f"""
            SELECT {_CONTRIBUTION_COLUMNS} FROM {table}
            WHERE member_id = ANY($1::text[])
               OR (kind = 'content_engaged'
                   AND substr(key, length('content_engaged:' || content_id || ':') + 1)
                       = ANY($1::text[]))
               OR (kind = 'referral_joined'
                   AND substr(key, length('referral_joined:') + 1) = ANY($1::text[]))
            """,
            sorted(member_ids),
        )
        return [_contribution(r) for r in rows]

    async def replace_contributions(
        self, old_keys: Collection[str], new: Sequence[Contribution], *, pending: bool = False
    ) -> None:
        table = "pending_contributions" if pending else "contributions"
        await self.conn.execute(
            f"DELETE FROM {table} WHERE key = ANY($1::text[])", sorted(old_keys)
        )
        if pending:
            await self.add_pending(new)
        else:
            await self._insert_contributions(new)

    async def members(self, member_ids: Collection[str]) -> dict[str, Member]:
        rows = await self.conn.fetch(
            "SELECT member_id, stage, score, evidence::text AS evidence FROM advocacy_members"
            " WHERE member_id = ANY($1::text[])",
            sorted(member_ids),
        )
        return {r["member_id"]: _member(r) for r in rows}

    async def put_members(self, members: Iterable[Member]) -> None:
        await self._upsert_members(members)

    async def delete_members(self, member_ids: Collection[str]) -> None:
        await self.conn.execute(
            "DELETE FROM advocacy_members WHERE member_id = ANY($1::text[])", sorted(member_ids)
        )

    # ---- referrals waiting for the member they brought in to engage ------------------------

    async def referrals(self, joined: Collection[str]) -> dict[str, Referral]:
        rows = await self.conn.fetch(
            f"SELECT {_REFERRAL_COLUMNS} FROM referrals WHERE joined_member_id = ANY($1::text[])",
            sorted(joined),
        )
        return {r["joined_member_id"]: _referral(r) for r in rows}

    async def referrals_involving(self, member_ids: Collection[str]) -> list[Referral]:
        rows = await self.conn.fetch(
            f"SELECT {_REFERRAL_COLUMNS} FROM referrals"
            " WHERE joined_member_id = ANY($1::text[]) OR referrer_member_id = ANY($1::text[])",
            sorted(member_ids),
        )
        return [_referral(r) for r in rows]

    async def put_referrals(self, referrals: Iterable[Referral]) -> None:
        rs = list(referrals)
        if not rs:
            return
        await self.conn.execute(
            f"""
            INSERT INTO referrals ({_REFERRAL_COLUMNS})
            SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[],
                                 $5::text[], $6::bool[])
            ON CONFLICT (joined_member_id) DO UPDATE SET
                referrer_member_id = EXCLUDED.referrer_member_id,
                acquired_at = EXCLUDED.acquired_at, engaged_at = EXCLUDED.engaged_at,
                engaged_cause = EXCLUDED.engaged_cause, credited = EXCLUDED.credited
            """,
            [r.joined for r in rs],
            [r.referrer for r in rs],
            [r.acquired_at for r in rs],
            [r.engaged_at for r in rs],
            [r.engaged_cause for r in rs],
            [r.credited for r in rs],
        )

    async def delete_referrals(self, joined: Collection[str]) -> None:
        await self.conn.execute(
            "DELETE FROM referrals WHERE joined_member_id = ANY($1::text[])", sorted(joined)
        )

    # ---- product feedback waiting for the clock -------------------------------------------

    async def add_pending_feedback(self, feedback: Sequence[Feedback]) -> None:
        if not feedback:
            return
        await self.conn.execute(
            f"""
            INSERT INTO pending_feedback ({_FEEDBACK_COLUMNS})
            SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[],
                                 $5::text[], $6::text[], $7::text[], $8::text[])
            ON CONFLICT (event_id) DO NOTHING
            """,
            [f.event_id for f in feedback],
            [f.member_id for f in feedback],
            [f.occurred_at for f in feedback],
            [f.feedback_kind for f in feedback],
            [f.source for f in feedback],
            [f.activity_id for f in feedback],
            [f.title for f in feedback],
            [f.url for f in feedback],
        )

    async def feedback_until(self, until: datetime) -> list[Feedback]:
        rows = await self.conn.fetch(
            f"SELECT {_FEEDBACK_COLUMNS} FROM pending_feedback"
            " WHERE occurred_at <= $1 ORDER BY occurred_at, event_id",
            until,
        )
        return [_feedback(r) for r in rows]

    async def drop_feedback(self, event_ids: Collection[str]) -> None:
        if event_ids:
            await self.conn.execute(
                "DELETE FROM pending_feedback WHERE event_id = ANY($1::text[])", list(event_ids)
            )

    async def move_feedback(self, old: str, new: str) -> None:
        await self.conn.execute(
            "UPDATE pending_feedback SET member_id = $2 WHERE member_id = $1", old, new
        )

    async def forget_feedback(self, member_ids: Collection[str]) -> None:
        await self.conn.execute(
            "DELETE FROM pending_feedback WHERE member_id = ANY($1::text[])", sorted(member_ids)
        )


_FEEDBACK_COLUMNS = (
    "event_id, member_id, occurred_at, feedback_kind, source, activity_id, title, url"
)


def _feedback(row: Any) -> Feedback:
    return Feedback(
        event_id=row["event_id"],
        member_id=row["member_id"],
        occurred_at=row["occurred_at"],
        feedback_kind=row["feedback_kind"],
        source=row["source"],
        activity_id=row["activity_id"],
        title=row["title"],
        url=row["url"],
    )


_REFERRAL_COLUMNS = (
    "joined_member_id, referrer_member_id, acquired_at, engaged_at, engaged_cause, credited"
)


def _referral(row: Any) -> Referral:
    return Referral(
        joined=row["joined_member_id"],
        referrer=row["referrer_member_id"],
        acquired_at=row["acquired_at"],
        engaged_at=row["engaged_at"],
        engaged_cause=row["engaged_cause"],
        credited=row["credited"],
    )
