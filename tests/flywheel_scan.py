"""The flywheel figures the precomputed series answer, computed the way the report did before
them: by scanning journey_transitions (the queries of services/gateway/flywheel/store.py and
journey.py before migration 008). The reference the series are held equal to."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from services.gateway.flywheel.rules import FUNNEL
from shared.postgres import Connection

WINDOW = (
    "{col} >= coalesce($1, '-infinity'::timestamptz)"
    " AND {col} < coalesce($2, 'infinity'::timestamptz)"
)


def window(col: str = "occurred_at") -> str:
    return WINDOW.format(col=col)


async def figures(conn: Connection, start: datetime | None, end: datetime | None) -> dict[str, Any]:
    """The figures of GET /v1/flywheel that the series now answer, from a scan."""
    entered: dict[str, dict[str, int]] = {}
    for r in await conn.fetch(
        f"SELECT dimension, to_stage, count(DISTINCT member_id) AS n FROM journey_transitions"
        f" WHERE {window()} GROUP BY dimension, to_stage",
        start,
        end,
    ):
        entered.setdefault(r["dimension"], {})[r["to_stage"]] = r["n"]
    conversions = []
    for (fd, fs), (td, ts) in FUNNEL:
        row = await conn.fetchrow(
            f"""
            WITH entered AS (
                SELECT member_id, min(occurred_at) AS at FROM journey_transitions
                WHERE dimension = $3 AND to_stage = $4 AND {window()} GROUP BY member_id)
            , reached AS (
                SELECT member_id, max(occurred_at) AS at FROM journey_transitions
                WHERE dimension = $5 AND to_stage = ANY($6::text[])
                  AND occurred_at < coalesce($2, 'infinity'::timestamptz)
                GROUP BY member_id)
            SELECT count(*) AS entered, count(*) FILTER (WHERE r.at >= e.at) AS converted
            FROM entered e LEFT JOIN reached r USING (member_id)
            """,
            start,
            end,
            fd,
            fs,
            td,
            list(ts),
        )
        assert row is not None
        conversions.append((fd, fs, td, ts[0], row["entered"], row["converted"]))
    time_in_stage = [
        (r["dimension"], r["stage"], r["n"], round(r["median_s"] / 86400, 2))
        for r in await conn.fetch(
            f"""
            WITH spans AS (
                SELECT dimension, to_stage AS stage, occurred_at AS entered_at,
                       lead(occurred_at) OVER (PARTITION BY member_id, dimension
                                               ORDER BY occurred_at, seq) AS occurred_at
                FROM journey_transitions)
            SELECT dimension, stage, count(*) AS n,
                   percentile_cont(0.5) WITHIN GROUP (
                       ORDER BY extract(epoch FROM occurred_at - entered_at)) AS median_s
            FROM spans WHERE occurred_at IS NOT NULL AND {window()}
            GROUP BY dimension, stage ORDER BY dimension, stage
            """,
            start,
            end,
        )
    ]
    new_members = await conn.fetchval(
        f"SELECT count(DISTINCT member_id) FROM journey_transitions"
        f" WHERE dimension = 'awareness' AND to_stage = 'member' AND {window()}",
        start,
        end,
    )
    touch = {
        r["channel"]: r["n"]
        for r in await conn.fetch(
            f"""
            WITH joined AS (
                SELECT member_id FROM journey_transitions
                WHERE dimension = 'awareness' AND to_stage = 'member' AND {window()}
                GROUP BY member_id)
            SELECT coalesce(f.channel, 'unknown') AS channel, count(*) AS n
            FROM joined j LEFT JOIN flywheel_first_touch f USING (member_id) GROUP BY 1
            """,
            start,
            end,
        )
    }
    members = await conn.fetchval(
        "SELECT count(DISTINCT member_id) FROM journey_transitions WHERE dimension = 'awareness'"
        " AND to_stage IN ('member', 'customer')"
        " AND occurred_at < coalesce($1, 'infinity'::timestamptz)",
        end,
    )
    new = await conn.fetchrow(
        f"""
        WITH joined AS (
            SELECT member_id, min(occurred_at) AS at FROM journey_transitions
            WHERE dimension = 'awareness' AND to_stage = 'member' AND {window()}
            GROUP BY member_id)
        SELECT count(*) AS n, count(*) FILTER (WHERE EXISTS (
            SELECT 1 FROM journey_transitions t
            WHERE t.member_id = j.member_id AND t.dimension = 'engagement'
              AND t.to_stage = 'engaged' AND t.occurred_at <= j.at + $3::interval)) AS engaged
        FROM joined j
        """,
        start,
        end,
        timedelta(days=30),
    )
    assert new is not None
    questions = await conn.fetchrow(
        f"""
        SELECT count(*) AS n, count(*) FILTER (WHERE EXISTS (
            SELECT 1 FROM flywheel_peer_help h
            WHERE h.thread_id = q.thread_id AND h.helped_member_id = q.member_id
              AND h.helper_member_id <> q.member_id
              AND h.occurred_at < coalesce($2, 'infinity'::timestamptz))) AS answered
        FROM flywheel_questions q WHERE {window("q.occurred_at")}
        """,
        start,
        end,
    )
    assert questions is not None
    weeks = [
        tuple(r)
        for r in await conn.fetch(
            f"""
            SELECT (date_trunc('week', q.occurred_at AT TIME ZONE 'UTC'))::date AS week,
                   count(*) AS n,
                   count(*) FILTER (WHERE EXISTS (
                       SELECT 1 FROM flywheel_peer_help h
                       WHERE h.thread_id = q.thread_id AND h.helped_member_id = q.member_id
                         AND h.helper_member_id <> q.member_id
                         AND h.occurred_at < coalesce($2, 'infinity'::timestamptz))) AS answered
            FROM flywheel_questions q WHERE {window("q.occurred_at")}
            GROUP BY 1 ORDER BY 1
            """,
            start,
            end,
        )
    ]
    members_per_stage: dict[str, dict[str, int]] = {}
    for r in await conn.fetch(
        "SELECT dimension, stage, count(*) AS n FROM member_stages GROUP BY dimension, stage"
    ):
        members_per_stage.setdefault(r["dimension"], {})[r["stage"]] = r["n"]
    at_risk = await conn.fetchval(
        "SELECT count(*) FROM member_stages WHERE dimension = 'engagement' AND stage = 'at_risk'"
    )
    advocates = await conn.fetchval(
        "SELECT count(*) FROM member_stages WHERE dimension = 'advocacy'"
        " AND stage IN ('advocate', 'champion')"
    )
    return {
        "members_per_stage": members_per_stage,
        "at_risk_now": at_risk,
        "advocates": advocates,
        "questions": (questions["n"], questions["answered"]),
        "peer_answer_weeks": weeks,
        "entered_per_stage": entered,
        "conversions": conversions,
        "time_in_stage": time_in_stage,
        "new_members": new_members,
        "first_touch_new_members": touch,
        "members_by_end": members,
        "new_engaged": (new["n"], new["engaged"]),
    }


def from_report(report: Any, peer_answer_weeks: list[Any]) -> dict[str, Any]:
    """The same figures, read off a FlywheelReport and the dashboard's weekly series."""
    health = {r.name: r for r in report.health}
    new = health["new_members_engaged_within_30_days"]
    return {
        "members_per_stage": report.members_per_stage,
        "at_risk_now": report.at_risk_now,
        "advocates": health["advocates_per_100_active_members"].count,
        "questions": (report.questions, report.questions_answered_by_peers),
        "peer_answer_weeks": [
            (w.week, w.questions, w.answered_by_peers) for w in peer_answer_weeks
        ],
        "entered_per_stage": report.entered_per_stage,
        "conversions": [
            (c.from_dimension, c.from_stage, c.to_dimension, c.to_stage, c.entered, c.converted)
            for c in report.conversions
        ],
        "time_in_stage": [
            (t.dimension, t.stage, t.left, t.median_days) for t in report.time_in_stage
        ],
        "new_members": report.new_members,
        "first_touch_new_members": {
            t.channel: t.new_members for t in report.first_touch if t.new_members
        },
        "members_by_end": health["active_members"].of,
        "new_engaged": (new.of, new.count),
    }


async def cohort_retention(conn: Connection) -> list[dict[str, Any]]:
    """directory.store.cohort_retention as a pass over every member (before migration 009)."""
    from services.gateway.directory.store import RETENTION_WEEKS, read_model_now, share

    now = await read_model_now(conn)
    if now is None:
        return []
    columns = ", ".join(
        f"count(*) FILTER (WHERE ew >= {w}) AS e{w},"
        f" count(*) FILTER (WHERE ew >= {w} AND aw >= {w}) AS r{w}"
        for w in RETENTION_WEEKS
    )
    rows = await conn.fetch(
        f"""
        SELECT to_char(month, 'YYYY-MM') AS cohort, members, {
            ", ".join(f"e{w}, r{w}" for w in RETENTION_WEEKS)
        }
        FROM (
            SELECT date_trunc('month', first_seen_at AT TIME ZONE 'UTC') AS month,
                   count(*) AS members, {columns}
            FROM (SELECT first_seen_at,
                         extract(epoch FROM last_active_at - first_seen_at) / 604800 AS aw,
                         extract(epoch FROM $1 - first_seen_at) / 604800 AS ew
                  FROM directory_members WHERE NOT anonymous) m
            GROUP BY 1) c
        ORDER BY month
        """,
        now,
    )
    return [
        {
            "cohort": r["cohort"],
            "members": r["members"],
            "retained": {str(w): share(r[f"r{w}"], r[f"e{w}"]) for w in RETENTION_WEEKS},
            "retained_members": {
                str(w): r[f"r{w}"] if r[f"e{w}"] else None for w in RETENTION_WEEKS
            },
        }
        for r in rows
    ]
