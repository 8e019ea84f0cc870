"""Engagement SQL: set-based, a fixed number of statements per batch whatever its size."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from services.engagement.domain import (
    ACTIVE_STAGES,
    AT_RISK,
    Cohort,
    Newcomer,
    Participant,
    Question,
    Rules,
    newcomer_deadline,
    next_deadline,
    question_deadline,
)
from services.engagement.domain import cohorts as cohorts_of
from shared.lifecycle.rewrite import ERASED
from shared.postgres import Connection

_COLUMNS = (
    "member_id, stage, score, score_at, first_seen_at, last_active_at, stage_since, activities"
)


def _participant(row: Any) -> Participant:
    return Participant(**{k: row[k] for k in _COLUMNS.split(", ")})


async def load(
    conn: Connection, member_ids: Iterable[str], due_by: datetime | None = None
) -> dict[str, Participant]:
    """The batch's actors, plus (with `due_by`, the watermark) every member whose next
    demotion is due by then: one query for both."""
    rows = await _by_key_or_due(conn, "participants", _COLUMNS, "member_id", member_ids, due_by)
    return {r["member_id"]: _participant(r) for r in rows}


async def _by_key_or_due(
    conn: Connection,
    table: str,
    columns: str,
    key: str,
    keys: Iterable[str],
    due_by: datetime | None,
) -> list[Any]:
    """Rows whose `key` is in `keys`, plus (with `due_by`) those due by then.

    Two selects, not one `WHERE key = ANY($1) OR next_deadline <= $2`: the planner reads an
    `OR` of two indexed conditions as a sequential scan of the whole table every batch, where
    each select alone uses its own index (the primary key; `<table>_next_deadline`). A row in
    both comes back twice; the callers build a dict by key, so the copies collapse."""
    keys = list(keys)
    if due_by is None:
        if not keys:
            return []
        return list(
            await conn.fetch(f"SELECT {columns} FROM {table} WHERE {key} = ANY($1::text[])", keys)
        )
    return list(
        await conn.fetch(
            f"SELECT {columns} FROM {table} WHERE {key} = ANY($1::text[])"
            f" UNION ALL SELECT {columns} FROM {table} WHERE next_deadline <= $2",
            keys,
            due_by,
        )
    )


_BEFORE_ANY_DEADLINE = datetime(1, 1, 1, tzinfo=UTC)
"""The lower bound of a sweep's first step: no row is due before it."""


async def sweep_step(
    conn: Connection, done_to: datetime | None, due_by: datetime, rows: int
) -> datetime:
    """How far the next step of a sweep to `due_by` goes: the deadline of the `rows`-th row
    due after `done_to` (where the last step went; None before the first) and by `due_by`,
    of participants, questions and newcomers together in deadline order, or `due_by` itself
    when no more are due. Every row due at that instant goes in the same step, so a step holds
    more than `rows` rows only when they share its deadline. The steps always move forward,
    even past a row whose stored deadline a change of the rules has made stale (it is loaded
    and advanced with every step, as with every sweep)."""
    at: datetime | None = await conn.fetchval(
        "SELECT next_deadline FROM ("
        " SELECT next_deadline FROM participants WHERE next_deadline > $1 AND next_deadline <= $2"
        " UNION ALL SELECT next_deadline FROM questions"
        "  WHERE next_deadline > $1 AND next_deadline <= $2"
        " UNION ALL SELECT next_deadline FROM newcomers"
        "  WHERE next_deadline > $1 AND next_deadline <= $2"
        ") AS due ORDER BY next_deadline OFFSET $3 LIMIT 1",
        done_to or _BEFORE_ANY_DEADLINE,
        due_by,
        rows - 1,
    )
    return due_by if at is None else at


async def save(conn: Connection, members: Iterable[Participant], rules: Rules) -> None:
    """Upsert the changed members in one statement, with their next deadline."""
    members = list(members)
    if not members:
        return
    await conn.execute(
        """
        INSERT INTO participants (member_id, stage, score, score_at, first_seen_at,
                                  last_active_at, stage_since, activities, next_deadline)
        SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::timestamptz[],
                             $5::timestamptz[], $6::timestamptz[], $7::timestamptz[],
                             $8::int[], $9::timestamptz[])
        ON CONFLICT (member_id) DO UPDATE SET
            stage = EXCLUDED.stage, score = EXCLUDED.score, score_at = EXCLUDED.score_at,
            first_seen_at = EXCLUDED.first_seen_at, last_active_at = EXCLUDED.last_active_at,
            stage_since = EXCLUDED.stage_since, activities = EXCLUDED.activities,
            next_deadline = EXCLUDED.next_deadline
        """,
        [m.member_id for m in members],
        [m.stage for m in members],
        [m.score for m in members],
        [m.score_at for m in members],
        [m.first_seen_at for m in members],
        [m.last_active_at for m in members],
        [m.stage_since for m in members],
        [m.activities for m in members],
        [next_deadline(m, rules) for m in members],
    )


async def cohorts(
    conn: Connection, at: datetime, rules: Rules | None = None
) -> dict[Cohort, list[str]]:
    """Members per cohort at `at` (normally the watermark): the candidates come from one
    indexed query, the classification from the pure `domain.cohorts`."""
    rules = rules or Rules()
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM participants WHERE stage = ANY($1::text[]) OR first_seen_at > $2",
        sorted(ACTIVE_STAGES | {AT_RISK}),
        at - timedelta(days=rules.newcomer_days),
    )
    return cohorts_of((_participant(r) for r in rows), at, rules)


async def delete(conn: Connection, member_ids: Collection[str]) -> None:
    """Merged into another member, or erased."""
    await conn.execute(
        "DELETE FROM participants WHERE member_id = ANY($1::text[])", sorted(member_ids)
    )


# --------------------------------------------------------------------------------------------
# issue 15: questions and honeymoons, each with its next deadline (swept like participants)
# --------------------------------------------------------------------------------------------

_QUESTION_COLUMNS = (
    "thread_key, thread_id, asker_member_id, question_activity_id, url, title, asked_at,"
    " answered_at, answer_activity_id, answered_by, answer_url, unanswered_signalled,"
    " answered_signalled"
)


async def load_questions(
    conn: Connection, thread_keys: Iterable[str], due_by: datetime | None = None
) -> dict[str, Question]:
    """The batch's threads, plus (with `due_by`, the watermark) every question with a signal
    due by then: one query."""
    rows = await _by_key_or_due(
        conn, "questions", _QUESTION_COLUMNS, "thread_key", thread_keys, due_by
    )
    return {
        r["thread_key"]: Question(**{k: r[k] for k in _QUESTION_COLUMNS.split(", ")}) for r in rows
    }


async def save_questions(conn: Connection, questions: Iterable[Question], rules: Rules) -> None:
    qs = list(questions)
    if not qs:
        return
    columns = _QUESTION_COLUMNS.split(", ")
    types = (
        "text[]", "text[]", "text[]", "text[]", "text[]", "text[]", "timestamptz[]",
        "timestamptz[]", "text[]", "text[]", "text[]", "bool[]", "bool[]", "timestamptz[]",
    )  # fmt: skip
    params = ", ".join(f"${i + 1}::{t}" for i, t in enumerate(types))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in [*columns[1:], "next_deadline"])
    await conn.execute(
        f"INSERT INTO questions ({_QUESTION_COLUMNS}, next_deadline)"
        f" SELECT * FROM unnest({params})"
        f" ON CONFLICT (thread_key) DO UPDATE SET {updates}",
        *([getattr(q, c) for q in qs] for c in columns),
        [question_deadline(q, rules) for q in qs],
    )


async def load_newcomers(
    conn: Connection, member_ids: Iterable[str], due_by: datetime | None = None
) -> dict[str, Newcomer]:
    rows = await _by_key_or_due(
        conn,
        "newcomers",
        "member_id, newcomer_as, started_at, last_active_at, did, signalled",
        "member_id",
        member_ids,
        due_by,
    )
    return {
        r["member_id"]: Newcomer(
            r["member_id"],
            r["newcomer_as"],
            r["started_at"],
            r["last_active_at"],
            tuple(sorted(orjson.loads(r["did"]).items())),
            r["signalled"],
        )
        for r in rows
    }


async def save_newcomers(conn: Connection, newcomers: Iterable[Newcomer], rules: Rules) -> None:
    ns = list(newcomers)
    if not ns:
        return
    await conn.execute(
        """
        INSERT INTO newcomers (member_id, newcomer_as, started_at, last_active_at, did,
                               signalled, next_deadline)
        SELECT m, a, s, l, d::jsonb, sg, nd
        FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[],
                    $6::bool[], $7::timestamptz[]) AS u(m, a, s, l, d, sg, nd)
        ON CONFLICT (member_id) DO UPDATE SET
            newcomer_as = EXCLUDED.newcomer_as, started_at = EXCLUDED.started_at,
            last_active_at = EXCLUDED.last_active_at, did = EXCLUDED.did,
            signalled = EXCLUDED.signalled, next_deadline = EXCLUDED.next_deadline
        """,
        [n.member_id for n in ns],
        [n.newcomer_as for n in ns],
        [n.started_at for n in ns],
        [n.last_active_at for n in ns],
        [orjson.dumps(dict(n.did)).decode() for n in ns],
        [n.signalled for n in ns],
        [newcomer_deadline(n, rules) for n in ns],
    )


async def merge_journey(conn: Connection, survivor: str, merged: str) -> None:
    """B's questions are A's; one honeymoon per person (A's if it has one)."""
    await conn.execute(
        "UPDATE questions SET asker_member_id = $1 WHERE asker_member_id = $2", survivor, merged
    )
    await conn.execute(
        "UPDATE questions SET answered_by = $1 WHERE answered_by = $2", survivor, merged
    )
    await conn.execute(
        "DELETE FROM newcomers WHERE member_id = $2"
        " AND EXISTS (SELECT 1 FROM newcomers WHERE member_id = $1)",
        survivor,
        merged,
    )
    await conn.execute("UPDATE newcomers SET member_id = $1 WHERE member_id = $2", survivor, merged)


async def erase_journey(conn: Connection, member_ids: Collection[str]) -> None:
    """The members' questions and honeymoons go; an answer they gave to someone else's
    question stays without their id (the question is the asker's)."""
    ids = sorted(member_ids)
    await conn.execute("DELETE FROM questions WHERE asker_member_id = ANY($1::text[])", ids)
    # an answer not yet announced is forgotten (the question waits for another); one announced
    # keeps its time, without the id
    await conn.execute(
        "UPDATE questions SET answered_at = NULL, answer_activity_id = NULL, answered_by = NULL,"
        " answer_url = NULL WHERE answered_by = ANY($1::text[]) AND NOT answered_signalled",
        ids,
    )
    await conn.execute(
        "UPDATE questions SET answered_by = $2 WHERE answered_by = ANY($1::text[])", ids, ERASED
    )
    await conn.execute("DELETE FROM newcomers WHERE member_id = ANY($1::text[])", ids)
