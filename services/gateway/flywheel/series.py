"""The flywheel's precomputed series (migration 008): per-day counts of stage entries and the
spans members spent in a stage, kept in the read model's transaction, so `flywheel_report`
reads small tables instead of scanning every transition (bench/dashboard.py measured the scans
at 0.8-1.1 s for 100k members and ~10 s for 1M).

Kept exact, not approximate: a figure is the day counters of the days strictly inside or
outside the window's bounds, plus the rows that fall on a boundary day, compared to the
boundary instant (the SQL comment in 008_flywheel_series.sql works it through). A member's rows
are recomputed from the earliest time a batch can have moved (`refresh_after`, migration 016),
or all of them after a merge or an erasure (`refresh`), and a rebuild from scratch
(`refresh(conn, None)`) gives the same tables.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime

from services.gateway.flywheel.rules import FUNNEL
from shared.contracts import StageChangedV1
from shared.postgres import Connection

ENGAGED_WITHIN_DAYS = 30
"""The health ratio's "new members engaged within 30 days"."""


def funnel_json() -> str:
    """FUNNEL as migration 008's function takes it (and as its backfill spells it)."""
    return json.dumps([[list(f), [t[0], list(t[1])]] for f, t in FUNNEL])


ENTER = "enter:"


def entered_kind(dimension: str, stage: str) -> str:
    return f"{ENTER}{dimension}:{stage}"


def conversion_kind(index: int) -> str:
    """FUNNEL[index]'s conversions: entries into its first stage that reached its second."""
    return f"convert:{index}"


JOINED = "joined"  # awareness member or customer: everyone who joined or bought
ENGAGED_30 = "engaged30"  # joined, and engaged within 30 days of it
TOUCH = "touch:"  # joined, by first-touch channel


async def refresh_after(
    conn: Connection, transitions: Sequence[StageChangedV1], retouched: Collection[str]
) -> None:
    """After a batch's transitions are recorded (and its first touches, `retouched` being the
    members whose channel moved), in the same transaction: recompute each member's entries and
    spans from the earliest time the batch can have moved (its horizon, migration 016), not
    from the member's first transition, and move the day counters by the difference."""
    if not transitions and not retouched:
        return
    await conn.execute(
        "SELECT flywheel_series_refresh_after($1::text[], $2::text[], $3::text[],"
        " $4::timestamptz[], $5::text[], $6::jsonb, make_interval(days => $7))",
        [t.member_id for t in transitions],
        [t.dimension for t in transitions],
        [t.to_stage for t in transitions],
        [t.occurred_at for t in transitions],
        sorted(retouched),
        funnel_json(),
        ENGAGED_WITHIN_DAYS,
    )


async def refresh(conn: Connection, members: Collection[str] | None) -> None:
    """Recompute every entry and span of these members from journey_transitions (None:
    everyone, from scratch) and move the day counters by the difference: after a merge or an
    erasure, in its transaction, and for a rebuild."""
    if members is not None and not members:
        return
    await conn.execute(
        "SELECT flywheel_series_refresh($1::text[], $2::jsonb, make_interval(days => $3))",
        None if members is None else sorted(members),
        funnel_json(),
        ENGAGED_WITHIN_DAYS,
    )


# Entries counted for a window: the day counters of the days that decide exactly, plus the
# boundary days' rows compared to the bounds (a NULL bound is open).
_COUNT = """
WITH b AS (SELECT ($1::timestamptz AT TIME ZONE 'UTC')::date AS ds,
                  ($2::timestamptz AT TIME ZONE 'UTC')::date AS de)
SELECT kind, sum(n)::bigint AS n FROM (
    SELECT d.kind, d.n FROM flywheel_entry_days d, b
    WHERE ($3::text[] IS NULL OR d.kind = ANY($3::text[]))
      AND d.day > coalesce(b.ds, '-infinity') AND d.day < coalesce(b.de, 'infinity')
      AND (d.prev_day = '-infinity' OR d.prev_day < coalesce(b.ds, '-infinity'))
      AND d.next_day < coalesce(b.de, 'infinity')
    UNION ALL
    SELECT e.kind, 1 FROM flywheel_entries e, b
    WHERE ($3::text[] IS NULL OR e.kind = ANY($3::text[]))
      AND (e.day = b.ds OR e.day = b.de OR (e.prev_day = b.ds AND e.prev_day <> '-infinity')
           OR (e.next_day = b.de AND e.next_day <> '-infinity'))
      AND e.at >= coalesce($1, '-infinity'::timestamptz)
      AND e.at < coalesce($2, 'infinity'::timestamptz)
      AND (e.prev_at IS NULL OR e.prev_at < $1)
      AND e.next_at < coalesce($2, 'infinity'::timestamptz)
) x GROUP BY kind
"""


async def entry_counts(
    conn: Connection,
    start: datetime | None,
    end: datetime | None,
    kinds: Sequence[str] | None = None,
) -> dict[str, int]:
    """Per kind (None: every kind): the members whose entry counts in [start, end), i.e. the
    members who entered in the window (and, for a conversion, reached the target before
    `end`), each once."""
    rows = await conn.fetch(_COUNT, start, end, None if kinds is None else list(kinds))
    return {r["kind"]: r["n"] for r in rows}


async def time_in_stage(
    conn: Connection, start: datetime | None, end: datetime | None
) -> list[tuple[str, str, int, float]]:
    """(dimension, stage, spans that ended in the window, median seconds)."""
    rows = await conn.fetch(
        """
        SELECT dimension, stage, count(*) AS n,
               percentile_cont(0.5) WITHIN GROUP (
                   ORDER BY extract(epoch FROM left_at - entered_at)) AS median_s
        FROM flywheel_spans
        WHERE left_at >= coalesce($1, '-infinity'::timestamptz)
          AND left_at < coalesce($2, 'infinity'::timestamptz)
        GROUP BY dimension, stage ORDER BY dimension, stage
        """,
        start,
        end,
    )
    return [(r["dimension"], r["stage"], r["n"], r["median_s"]) for r in rows]


# A question's answer time: the first help a member other than the asker gave the asker in
# its thread (NULL: none yet). "Answered by a peer before `to`" is answered_at < to.
_ANSWERED = """
UPDATE flywheel_questions q SET answered_at = a.at
FROM (SELECT q2.activity_id,
             (SELECT min(h.occurred_at) FROM flywheel_peer_help h
              WHERE h.thread_id = q2.thread_id AND h.helped_member_id = q2.member_id
                AND h.helper_member_id <> q2.member_id) AS at
      FROM flywheel_questions q2
      WHERE {which}) a
WHERE q.activity_id = a.activity_id AND q.answered_at IS DISTINCT FROM a.at
"""


async def refresh_answers(
    conn: Connection,
    questions: Sequence[str] = (),
    threads: Sequence[tuple[str | None, str]] = (),
    askers: Sequence[str] = (),
    everyone: bool = False,
) -> None:
    """Recompute the answer time of these questions (by activity id), of the questions asked
    in these (thread, asker) pairs, and of these askers' questions (`everyone`: all of them, a
    rebuild)."""
    if everyone:
        await conn.execute(_ANSWERED.format(which="true"))
        return
    # one statement per selector, each an index lookup (an OR of them would scan)
    if questions:
        await conn.execute(
            _ANSWERED.format(which="q2.activity_id = ANY($1::text[])"), list(questions)
        )
    pairs = sorted({(t, m) for t, m in threads if t is not None})
    if pairs:
        await conn.execute(
            _ANSWERED.format(
                which="(q2.thread_id, q2.member_id) IN"
                " (SELECT * FROM unnest($1::text[], $2::text[]))"
            ),
            [t for t, _ in pairs],
            [m for _, m in pairs],
        )
    if askers:
        await conn.execute(_ANSWERED.format(which="q2.member_id = ANY($1::text[])"), sorted(askers))
