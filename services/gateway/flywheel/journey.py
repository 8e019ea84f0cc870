"""The flywheel's facts and figures for the whole journey (issue 15): first touch and
community-influenced conversion (awareness's transition details), retention and whether
customers took part, time to first response, the honeymoon drop-off, product feedback, and the
health ratios. Projected from the events that state them; figures over an event-time window.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from services.gateway.flywheel import series
from services.gateway.flywheel.models import (
    CommunityInfluence,
    FirstResponse,
    FirstTouch,
    Ratio,
    Retention,
)
from services.gateway.flywheel.rules import share
from shared.cloudevents import Envelope
from shared.contracts import (
    ActivityV1,
    ChampionFeedbackV1,
    FirstTouchV1,
    NewcomerDropOffV1,
    ProductFeedbackV1,
    QuestionAnsweredV1,
    QuestionUnansweredV1,
    StageChangedV1,
)
from shared.postgres import Connection

NOT_TAKING_PART: frozenset[str] = frozenset(
    {
        "page_view",  # reading
        "signup",  # joining is not yet taking part
        "purchase",  # commercial
        "trial_started",
        "renewal",
        "downgrade",
        "cancellation",
        "demo_request",
        "comparison_view",
        "product_view",
    }
)
"""Kinds that do not make a member active in the community (the health ratios)."""

RETENTION_STAGES = ("customer", "retained", "lapsed", "churned")


def takes_part(a: ActivityV1) -> bool:
    actor = a.actor
    return not (
        actor.anonymous or actor.is_team_member or actor.is_bot or a.kind in NOT_TAKING_PART
    )


async def project_journey_facts(conn: Connection, events: Sequence[Envelope]) -> list[str]:
    """One statement per kind of fact, set-based; every insert is idempotent. Returns the
    members whose first-touch channel the batch moved."""
    touches: dict[str, tuple[str | None, str | None, datetime, bool]] = {}
    conversions = []
    active: dict[tuple[str, object], datetime] = {}
    questions: list[tuple[str, str, str, str, str | None, float | None, datetime]] = []
    drop_offs = []
    feedback = []
    champions_feedback: list[str] = []
    for e in events:
        d = e.data
        if isinstance(d, StageChangedV1) and d.dimension == "awareness" and d.details:
            det = d.details
            if det.first_touch_channel:
                seen = touches.get(d.member_id)
                if seen is None or (not seen[3] and seen[2] <= d.occurred_at):
                    touches[d.member_id] = (
                        det.first_touch_channel,
                        det.first_touch_detail,
                        d.occurred_at,
                        False,
                    )
            if d.to_stage == "customer" and det.community_influenced is not None:
                conversions.append((e.id, d))
        elif isinstance(d, FirstTouchV1):  # settled: wins over every transition's details
            touches[d.member_id] = (d.channel, d.detail, d.occurred_at, True)
        elif isinstance(d, ActivityV1) and takes_part(d):
            at = d.occurred_at.astimezone(UTC)
            key = (d.actor.member_id, at.date())
            active[key] = min(at, active.get(key, at))
        elif isinstance(d, QuestionAnsweredV1):
            questions.append(
                (e.id, "answered", d.member_id, d.thread_id, d.answered_by_member_id,
                 d.first_response_s, d.occurred_at)
            )  # fmt: skip
        elif isinstance(d, QuestionUnansweredV1):
            questions.append(
                (e.id, "unanswered", d.member_id, d.thread_id, None, None, d.occurred_at)
            )
        elif isinstance(d, NewcomerDropOffV1):
            drop_offs.append((e.id, d.member_id, d.newcomer_as, d.occurred_at))
        elif isinstance(d, ProductFeedbackV1):
            feedback.append((e.id, d.member_id, d.feedback_kind, d.from_champion, d.occurred_at))
        elif isinstance(d, ChampionFeedbackV1):  # advocacy's flag, decided in event time
            champions_feedback.append(d.feedback_event_id)

    retouched: list[str] = []
    if touches:
        rows = await conn.fetch(
            # the members whose channel this moved (new ones included): their joinings' touch
            # rows in the series move with it (the statement's CTEs read the rows before it)
            "WITH before AS (SELECT member_id, channel FROM flywheel_first_touch"
            " WHERE member_id = ANY($1::text[])),"
            " written AS ("
            "INSERT INTO flywheel_first_touch (member_id, channel, detail, stated_at, settled)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[],"
            " $5::bool[])"
            " ON CONFLICT (member_id) DO UPDATE SET channel = EXCLUDED.channel,"
            " detail = EXCLUDED.detail, stated_at = EXCLUDED.stated_at,"
            " settled = EXCLUDED.settled"
            " WHERE NOT flywheel_first_touch.settled"
            " AND (EXCLUDED.settled OR flywheel_first_touch.stated_at <= EXCLUDED.stated_at)"
            " RETURNING member_id, channel)"
            " SELECT w.member_id FROM written w LEFT JOIN before b USING (member_id)"
            " WHERE b.member_id IS NULL OR b.channel IS DISTINCT FROM w.channel",
            list(touches),
            [t[0] for t in touches.values()],
            [t[1] for t in touches.values()],
            [t[2] for t in touches.values()],
            [t[3] for t in touches.values()],
        )
        retouched = [r["member_id"] for r in rows]
    if conversions:
        await conn.execute(
            "INSERT INTO flywheel_conversions (event_id, member_id, from_stage, considered,"
            " community_influenced, community_touchpoints, channel, occurred_at)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::bool[],"
            " $6::int[], $7::text[], $8::timestamptz[]) ON CONFLICT DO NOTHING",
            [i for i, _ in conversions],
            [c.member_id for _, c in conversions],
            [c.from_stage for _, c in conversions],
            [bool(c.details and c.details.considered) for _, c in conversions],
            [bool(c.details and c.details.community_influenced) for _, c in conversions],
            [(c.details.community_touchpoints or 0) if c.details else 0 for _, c in conversions],
            [c.details.first_touch_channel if c.details else None for _, c in conversions],
            [c.occurred_at for _, c in conversions],
        )
    if active:
        await conn.execute(
            "INSERT INTO flywheel_active_days (member_id, day, at)"
            " SELECT * FROM unnest($1::text[], $2::date[], $3::timestamptz[])"
            # only an earlier time is written: a day already known is not rewritten
            " ON CONFLICT (member_id, day) DO UPDATE SET at = EXCLUDED.at"
            " WHERE EXCLUDED.at < flywheel_active_days.at",
            [m for m, _ in active],
            [day for _, day in active],
            list(active.values()),
        )
    if questions:
        columns = list(zip(*questions, strict=True))
        await conn.execute(
            "INSERT INTO flywheel_question_signals (event_id, kind, member_id, thread_id,"
            " answered_by, first_response_s, occurred_at)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
            " $6::float8[], $7::timestamptz[]) ON CONFLICT DO NOTHING",
            *(list(c) for c in columns),
        )
    if drop_offs:
        columns = list(zip(*drop_offs, strict=True))
        await conn.execute(
            "INSERT INTO flywheel_drop_offs (event_id, member_id, newcomer_as, occurred_at)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])"
            " ON CONFLICT DO NOTHING",
            *(list(c) for c in columns),
        )
    if feedback:
        columns = list(zip(*feedback, strict=True))
        await conn.execute(
            "INSERT INTO flywheel_feedback (event_id, member_id, feedback_kind, from_champion,"
            " occurred_at) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[],"
            " $5::timestamptz[]) ON CONFLICT DO NOTHING",
            *(list(c) for c in columns),
        )
    if champions_feedback:  # after the feedback it flags (the same batch, or an earlier one)
        await conn.execute(
            "UPDATE flywheel_feedback SET from_champion = true WHERE event_id = ANY($1::text[])",
            champions_feedback,
        )
    return retouched


WINDOW = (
    "{col} >= coalesce($1, '-infinity'::timestamptz)"
    " AND {col} < coalesce($2, 'infinity'::timestamptz)"
)


def window(col: str = "occurred_at") -> str:
    return WINDOW.format(col=col)


async def first_touch(
    conn: Connection, start: datetime | None, end: datetime | None, entries: dict[str, int]
) -> list[FirstTouch]:
    """New members per first-touch channel (`entries`: series.entry_counts for the window)
    next to the customers who converted in the window per channel."""
    members = {
        kind.removeprefix(series.TOUCH): n
        for kind, n in entries.items()
        if kind.startswith(series.TOUCH) and n
    }
    customers = {
        r["channel"]: r["n"]
        for r in await conn.fetch(
            # the settled first touch (member.first_touch.v1) over the conversion's as-known
            "SELECT CASE WHEN f.settled THEN coalesce(f.channel, 'unknown')"
            " ELSE coalesce(c.channel, 'unknown') END AS channel, count(*) AS n"
            " FROM flywheel_conversions c LEFT JOIN flywheel_first_touch f USING (member_id)"
            f" WHERE {window('c.occurred_at')} GROUP BY 1",
            start,
            end,
        )
    }
    return [
        FirstTouch(
            channel=channel,
            new_members=members.get(channel, 0),
            customers=customers.get(channel, 0),
        )
        for channel in sorted(members.keys() | customers.keys())
    ]


async def community_influence(
    conn: Connection, start: datetime | None, end: datetime | None
) -> CommunityInfluence:
    row = await conn.fetchrow(
        f"SELECT count(*) AS n, count(*) FILTER (WHERE community_influenced) AS influenced"
        f" FROM flywheel_conversions WHERE {window()}",
        start,
        end,
    )
    considering = await conn.fetchrow(
        f"""
        WITH entered AS (
            SELECT member_id, min(occurred_at) AS at FROM journey_transitions
            WHERE dimension = 'awareness' AND to_stage = 'considering' AND {window()}
              -- a visitor who signed up is counted once, as the member
              AND member_id NOT IN (SELECT member_id FROM member_stages
                                    WHERE dimension = 'awareness' AND stage = 'merged')
            GROUP BY member_id),
        converted AS (
            SELECT e.member_id, bool_or(c.community_influenced) AS influenced
            FROM entered e JOIN flywheel_conversions c ON c.member_id = e.member_id
             AND c.occurred_at >= e.at AND c.occurred_at < coalesce($2, 'infinity'::timestamptz)
            GROUP BY e.member_id)
        SELECT (SELECT count(*) FROM entered) AS entered,
               count(*) AS converted,
               count(*) FILTER (WHERE influenced) AS with_community
        FROM converted
        """,
        start,
        end,
    )
    assert row is not None and considering is not None
    return CommunityInfluence(
        customers=row["n"],
        community_influenced=row["influenced"],
        influenced_share=share(row["influenced"], row["n"]),
        considering_entered=considering["entered"],
        considering_converted=considering["converted"],
        considering_converted_with_community=considering["with_community"],
        considering_converted_without_community=considering["converted"]
        - considering["with_community"],
        considering_conversion_rate=share(considering["converted"], considering["entered"]),
    )


async def retention(conn: Connection, end: datetime | None) -> Retention:
    rows = await conn.fetch(
        """
        SELECT s.stage, count(*) AS n,
               count(*) FILTER (WHERE EXISTS (
                   SELECT 1 FROM flywheel_active_days a WHERE a.member_id = s.member_id
                     AND a.at < coalesce($1, 'infinity'::timestamptz))) AS took_part
        FROM member_stages s
        WHERE s.dimension = 'awareness' AND s.stage = ANY($2::text[])
        GROUP BY s.stage
        """,
        end,
        list(RETENTION_STAGES),
    )
    by_stage = {r["stage"]: (r["n"], r["took_part"]) for r in rows}
    counts = {s: by_stage.get(s, (0, 0))[0] for s in RETENTION_STAGES}
    took = {s: by_stage.get(s, (0, 0))[1] for s in RETENTION_STAGES}
    return Retention(
        customers_per_stage=counts,
        took_part_per_stage=took,
        took_part_share_per_stage={s: share(took[s], counts[s]) for s in RETENTION_STAGES},
    )


async def first_response(
    conn: Connection, start: datetime | None, end: datetime | None
) -> FirstResponse:
    row = await conn.fetchrow(
        f"""
        SELECT count(*) FILTER (WHERE kind = 'answered') AS answered,
               count(*) FILTER (WHERE kind = 'unanswered') AS unanswered,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY first_response_s)
                   FILTER (WHERE kind = 'answered') AS median_s,
               percentile_cont(0.9) WITHIN GROUP (ORDER BY first_response_s)
                   FILTER (WHERE kind = 'answered') AS p90_s
        FROM flywheel_question_signals WHERE {window()}
        """,
        start,
        end,
    )
    assert row is not None

    def hours(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds / 3600, 2)

    return FirstResponse(
        answered=row["answered"],
        unanswered_signals=row["unanswered"],
        median_hours=hours(row["median_s"]),
        p90_hours=hours(row["p90_s"]),
    )


async def counted_by(
    conn: Connection, table: str, column: str, start: datetime | None, end: datetime | None
) -> dict[str, int]:
    rows = await conn.fetch(
        f"SELECT {column} AS k, count(*) AS n FROM {table} WHERE {window()} GROUP BY 1",
        start,
        end,
    )
    return {r["k"]: r["n"] for r in rows}


async def health(
    conn: Connection,
    start: datetime | None,
    end: datetime | None,
    questions: int,
    answered_by_peers: int,
    entries: dict[str, int],
) -> list[Ratio]:
    """The health ratios for the window; `entries` is series.entry_counts for it."""
    # everyone who had joined or bought by `to`: their first such entry, before `to`
    members = (await series.entry_counts(conn, None, end, [series.JOINED])).get(series.JOINED, 0)
    active = await conn.fetchval(
        f"SELECT count(DISTINCT member_id) FROM flywheel_active_days WHERE {window('at')}",
        start,
        end,
    )
    new = {
        "n": entries.get(series.entered_kind("awareness", "member"), 0),
        "engaged": entries.get(series.ENGAGED_30, 0),
    }
    advocates = await conn.fetchval(
        "SELECT coalesce(sum(n), 0)::bigint FROM flywheel_stage_counts"
        " WHERE dimension = 'advocacy'"
        " AND stage IN ('advocate', 'champion')"
    )
    per_100 = round(100 * advocates / active, 2) if active else None
    return [
        Ratio(
            name="active_members",
            count=active,
            of=members,
            ratio=share(active, members),
            read_as="members with a counted community activity (not reading, joining or "
            "buying) in the window, of everyone who had joined by its end: how much of the "
            "membership is alive, not how big it is",
        ),
        Ratio(
            name="peer_answer_share",
            count=answered_by_peers,
            of=questions,
            ratio=share(answered_by_peers, questions),
            read_as="questions asked in the window that another member (not staff) helped "
            "with: the community supporting itself",
        ),
        Ratio(
            name="new_members_engaged_within_30_days",
            count=new["engaged"],
            of=new["n"],
            ratio=share(new["engaged"], new["n"]),
            read_as="of the members who joined in the window, those engaged within 30 days of "
            "joining: whether the welcome works",
        ),
        Ratio(
            name="advocates_per_100_active_members",
            count=advocates,
            of=active,
            ratio=per_100,
            per=100,
            read_as="current advocates and champions per 100 members active in the window: "
            "whether taking part grows into advocacy",
        ),
    ]


MERGE_SQL = (
    # one first touch per person: the survivor's own if it has one
    "DELETE FROM flywheel_first_touch WHERE member_id = $2"
    " AND EXISTS (SELECT 1 FROM flywheel_first_touch WHERE member_id = $1)",
    "UPDATE flywheel_first_touch SET member_id = $1 WHERE member_id = $2",
    "UPDATE flywheel_conversions SET member_id = $1 WHERE member_id = $2",
    "INSERT INTO flywheel_active_days (member_id, day, at)"
    " SELECT $1::text, day, at FROM flywheel_active_days WHERE member_id = $2"
    " ON CONFLICT DO NOTHING",
    "DELETE FROM flywheel_active_days WHERE member_id = $2 AND member_id <> $1",
    "UPDATE flywheel_question_signals SET member_id = $1 WHERE member_id = $2",
    "UPDATE flywheel_question_signals SET answered_by = $1 WHERE answered_by = $2",
    "UPDATE flywheel_drop_offs SET member_id = $1 WHERE member_id = $2",
    "UPDATE flywheel_feedback SET member_id = $1 WHERE member_id = $2",
)
ERASE_SQL = (
    "DELETE FROM flywheel_first_touch WHERE member_id = ANY($1::text[])",
    "DELETE FROM flywheel_conversions WHERE member_id = ANY($1::text[])",
    "DELETE FROM flywheel_active_days WHERE member_id = ANY($1::text[])",
    "DELETE FROM flywheel_question_signals WHERE member_id = ANY($1::text[])",
    "DELETE FROM flywheel_drop_offs WHERE member_id = ANY($1::text[])",
    "DELETE FROM flywheel_feedback WHERE member_id = ANY($1::text[])",
    # a referral first touch names the referrer
    "UPDATE flywheel_first_touch SET detail = NULL WHERE detail = ANY($1::text[])",
)
ERASED_ANSWERER = (
    "UPDATE flywheel_question_signals SET answered_by = $2 WHERE answered_by = ANY($1::text[])"
)
