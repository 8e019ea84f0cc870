"""The flywheel's SQL: the facts it keeps besides the journey (referral acquisitions, peer
help, questions asked, churn-risk signals), each from the event that states it; the figures
computed over them and the journey tables; and what a merge and an erasure do to its tables.

`flywheel_report` stays one function: its queries share one window clause and one connection,
and read best top to bottom next to the report they fill.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from services.gateway.flywheel import journey, series
from services.gateway.flywheel.models import Conversion, FlywheelReport, TimeInStage
from services.gateway.flywheel.rules import FUNNEL, is_question, share
from shared import lifecycle
from shared.cloudevents import Envelope
from shared.contracts import (
    ActivityV1,
    ChurnRiskV1,
    MemberAcquiredV1,
    PeerHelpV1,
    StageChangedV1,
)
from shared.postgres import Connection
from shared.uow import UnitOfWork


async def project_facts(uow: UnitOfWork, events: Sequence[Envelope]) -> None:
    """Record the facts the figures need; set-based, one statement per kind of fact."""
    acquired = [e.data for e in events if isinstance(e.data, MemberAcquiredV1)]
    helped = [(e.id, e.data) for e in events if isinstance(e.data, PeerHelpV1)]
    risks = [(e.id, e.data) for e in events if isinstance(e.data, ChurnRiskV1)]
    questions = [e.data for e in events if isinstance(e.data, ActivityV1) and is_question(e.data)]
    conn = uow.conn
    retouched = await journey.project_journey_facts(conn, events)
    # the series of the members whose journey (or first-touch channel) this batch moved; after
    # the journey's part of the batch (bootstrap.handle_batch) and the first touches above
    await series.refresh_after(
        conn, [e.data for e in events if isinstance(e.data, StageChangedV1)], retouched
    )
    if acquired:
        await conn.execute(
            "INSERT INTO flywheel_acquisitions (member_id, referrer_member_id, occurred_at)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])"
            " ON CONFLICT DO NOTHING",
            [a.member_id for a in acquired],
            [a.referrer_member_id for a in acquired],
            [a.occurred_at for a in acquired],
        )
    if helped:
        await conn.execute(
            "INSERT INTO flywheel_peer_help"
            " (event_id, helper_member_id, helped_member_id, thread_id, accepted, occurred_at)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[],"
            " $6::timestamptz[]) ON CONFLICT DO NOTHING",
            [i for i, _ in helped],
            [h.helper_member_id for _, h in helped],
            [h.helped_member_id for _, h in helped],
            [h.thread_id for _, h in helped],
            [h.accepted for _, h in helped],
            [h.occurred_at for _, h in helped],
        )
    if questions:
        await conn.execute(
            "INSERT INTO flywheel_questions (activity_id, member_id, thread_id, occurred_at)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])"
            " ON CONFLICT DO NOTHING",
            [f"{q.source}:{q.activity_id}" for q in questions],
            [q.actor.member_id for q in questions],
            [q.target.thread_id if q.target else None for q in questions],
            [q.occurred_at for q in questions],
        )
    # the answer times of the batch's questions, and of the questions its help answers
    await series.refresh_answers(
        conn,
        questions=[f"{q.source}:{q.activity_id}" for q in questions],
        threads=[(h.thread_id, h.helped_member_id) for _, h in helped],
    )
    if risks:
        await conn.execute(
            "INSERT INTO flywheel_churn_risk (event_id, member_id, occurred_at)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])"
            " ON CONFLICT DO NOTHING",
            [i for i, _ in risks],
            [r.member_id for _, r in risks],
            [r.occurred_at for _, r in risks],
        )


async def flywheel_report(
    conn: Connection, start: datetime | None, end: datetime | None
) -> FlywheelReport:
    """GET /v1/flywheel for [start, end) (None: open). The counts of stage entries and the
    time in stage come from the precomputed series (series.py), the rest from small tables."""
    window = (
        "occurred_at >= coalesce($1, '-infinity'::timestamptz)"
        " AND occurred_at < coalesce($2, 'infinity'::timestamptz)"
    )

    members: dict[str, dict[str, int]] = {}
    for r in await conn.fetch(
        # counted as member_stages moves (migration 011), not a pass over every member
        "SELECT dimension, stage, n FROM flywheel_stage_counts WHERE n > 0"
        " ORDER BY dimension, stage"
    ):
        members.setdefault(r["dimension"], {})[r["stage"]] = r["n"]
    # who entered what in the window, and who converted: day counters, not a scan (series.py)
    counts = await series.entry_counts(conn, start, end)
    entered: dict[str, dict[str, int]] = {}
    for kind, n in sorted(counts.items()):
        if kind.startswith(series.ENTER) and n:
            dimension, _, stage = kind.removeprefix(series.ENTER).partition(":")
            entered.setdefault(dimension, {})[stage] = n

    conversions = []
    for i, ((fd, fs), (td, ts)) in enumerate(FUNNEL):
        entered_n = counts.get(series.entered_kind(fd, fs), 0)
        converted = counts.get(series.conversion_kind(i), 0)
        conversions.append(
            Conversion(
                from_dimension=fd,
                from_stage=fs,
                to_dimension=td,
                to_stage=ts[0],
                entered=entered_n,
                converted=converted,
                rate=share(converted, entered_n),
            )
        )

    time_in_stage = [
        TimeInStage(
            dimension=dimension, stage=stage, left=n, median_days=round(median_s / 86400, 2)
        )
        for dimension, stage, n, median_s in await series.time_in_stage(conn, start, end)
    ]

    new_members = counts.get(series.entered_kind("awareness", "member"), 0)
    via_referral = await conn.fetchval(
        f"SELECT count(*) FROM flywheel_acquisitions WHERE {window}", start, end
    )
    help_row = await conn.fetchrow(
        f"SELECT count(*) AS n, count(*) FILTER (WHERE accepted) AS accepted"
        f" FROM flywheel_peer_help WHERE {window}",
        start,
        end,
    )
    assert help_row is not None
    # answered by a peer before `to`: the question's own answer time (series.refresh_answers)
    question_row = await conn.fetchrow(
        f"SELECT count(*) AS n, count(*) FILTER ("
        f" WHERE answered_at < coalesce($2, 'infinity'::timestamptz)) AS answered"
        f" FROM flywheel_questions WHERE {window}",
        start,
        end,
    )
    assert question_row is not None
    churn = await conn.fetchval(
        f"SELECT count(*) FROM flywheel_churn_risk WHERE {window}", start, end
    )
    at_risk = await conn.fetchval(
        "SELECT coalesce(sum(n), 0)::bigint FROM flywheel_stage_counts"
        " WHERE dimension = 'engagement' AND stage = 'at_risk'"
    )
    return FlywheelReport(
        window_from=start,
        window_to=end,
        members_per_stage=members,
        entered_per_stage=entered,
        conversions=conversions,
        time_in_stage=time_in_stage,
        new_members=new_members,
        new_members_via_referral=via_referral,
        referral_share=share(via_referral, new_members),
        peer_help=help_row["n"],
        peer_help_accepted=help_row["accepted"],
        questions=question_row["n"],
        questions_answered_by_peers=question_row["answered"],
        peer_answer_share=share(question_row["answered"], question_row["n"]),
        churn_risk_signals=churn,
        at_risk_now=at_risk,
        first_touch=await journey.first_touch(conn, start, end, counts),
        community_influenced_conversion=await journey.community_influence(conn, start, end),
        retention=await journey.retention(conn, end),
        time_to_first_response=await journey.first_response(conn, start, end),
        newcomer_drop_offs=await journey.counted_by(
            conn, "flywheel_drop_offs", "newcomer_as", start, end
        ),
        product_feedback=await _feedback(conn, start, end),
        health=await journey.health(
            conn, start, end, question_row["n"], question_row["answered"], counts
        ),
    )


async def _feedback(
    conn: Connection, start: datetime | None, end: datetime | None
) -> dict[str, int]:
    counts = await journey.counted_by(conn, "flywheel_feedback", "feedback_kind", start, end)
    champions = await journey.counted_by(conn, "flywheel_feedback", "from_champion", start, end)
    return {**counts, "from_champions": sum(n for k, n in champions.items() if k)}


# --------------------------------------------------------------------------------------------
# the flywheel's part of a merge and an erasure (composed in services/gateway/member_state.py)
# --------------------------------------------------------------------------------------------


async def merge_member(conn: Connection, survivor: str, merged: str) -> None:
    """B's flywheel facts are A's now; one acquisition per person (the survivor's own, if it
    has one), and no referral of oneself."""
    for sql in (
        # one acquisition per person: the survivor's own, if it has one
        "DELETE FROM flywheel_acquisitions WHERE member_id = $2"
        " AND EXISTS (SELECT 1 FROM flywheel_acquisitions WHERE member_id = $1)",
        "UPDATE flywheel_acquisitions SET member_id = $1 WHERE member_id = $2",
        "UPDATE flywheel_acquisitions SET referrer_member_id = $1 WHERE referrer_member_id = $2",
        "UPDATE flywheel_peer_help SET helper_member_id = $1 WHERE helper_member_id = $2",
        "UPDATE flywheel_peer_help SET helped_member_id = $1 WHERE helped_member_id = $2",
        "UPDATE flywheel_questions SET member_id = $1 WHERE member_id = $2",
        "UPDATE flywheel_churn_risk SET member_id = $1 WHERE member_id = $2",
    ):
        await conn.execute(sql, survivor, merged)
    for sql in journey.MERGE_SQL:
        await conn.execute(sql, survivor, merged)
    # B referred A, or A referred B: no referral of oneself
    await conn.execute(
        "DELETE FROM flywheel_acquisitions WHERE member_id = $1 AND referrer_member_id = $1",
        survivor,
    )
    # the journey's part ran first (member_state.MERGES): A's transitions are both now
    await series.refresh(conn, {survivor, merged})
    # B's help to A, or A's to B, is no peer's any more
    await series.refresh_answers(conn, askers=[survivor])


async def erase_members(conn: Connection, ids: Collection[str], at: datetime) -> None:
    """Delete the members' facts; where someone else's fact names one of them (a referrer, a
    helped member), put `lifecycle.ERASED` in its place."""
    members = sorted(ids)
    # the questions their help answered: answered later, or not at all, once it is gone
    answered = await conn.fetch(
        "SELECT DISTINCT thread_id, helped_member_id FROM flywheel_peer_help"
        " WHERE helper_member_id = ANY($1::text[])",
        members,
    )
    for sql in (
        "DELETE FROM flywheel_acquisitions WHERE member_id = ANY($1::text[])",
        "DELETE FROM flywheel_peer_help WHERE helper_member_id = ANY($1::text[])",
        "DELETE FROM flywheel_questions WHERE member_id = ANY($1::text[])",
        "DELETE FROM flywheel_churn_risk WHERE member_id = ANY($1::text[])",
    ):
        await conn.execute(sql, members)
    for sql in journey.ERASE_SQL:
        await conn.execute(sql, members)
    await series.refresh(conn, members)  # their transitions are gone: their rows and counts go
    await conn.execute(journey.ERASED_ANSWERER, members, lifecycle.ERASED)
    await conn.execute(
        "UPDATE flywheel_acquisitions SET referrer_member_id = $2"
        " WHERE referrer_member_id = ANY($1::text[])",
        members,
        lifecycle.ERASED,
    )
    await conn.execute(
        "UPDATE flywheel_peer_help SET helped_member_id = $2"
        " WHERE helped_member_id = ANY($1::text[])",
        members,
        lifecycle.ERASED,
    )
    await series.refresh_answers(
        conn, threads=[(r["thread_id"], r["helped_member_id"]) for r in answered]
    )
