"""Flywheel figures: does the community turn people into advocates who bring the next people in?

The read model keeps a few facts besides the journey transitions (referral acquisitions, peer
help, questions asked, churn-risk signals), each from the event that states it, and
`GET /v1/flywheel?from=&to=` computes the figures over an event-time window. Formulas are in
each field's description (and so in the OpenAPI document).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from services.gateway import auth
from services.gateway.ports import Unavailable
from services.gateway.problems import TYPE_PREFIX, ProblemError
from shared.cloudevents import Envelope
from shared.contracts import ActivityV1, ChurnRiskV1, MemberAcquiredV1, PeerHelpV1
from shared.postgres import TRANSIENT_DB_ERRORS, Connection
from shared.uow import UnitOfWork

INVALID_WINDOW = TYPE_PREFIX + "invalid-window"

# (from dimension, from stage) -> (to dimension, to stages): the funnel the flywheel runs on.
# A visitor converts under its own id as `merged` (it signed up as a member id) or `member`.
FUNNEL: tuple[tuple[tuple[str, str], tuple[str, tuple[str, ...]]], ...] = (
    (("awareness", "visitor"), ("awareness", ("member", "merged"))),
    (("awareness", "member"), ("engagement", ("engaged",))),
    (("engagement", "engaged"), ("advocacy", ("advocate",))),
    (("advocacy", "advocate"), ("advocacy", ("champion",))),
    (("awareness", "member"), ("awareness", ("customer",))),
    (("engagement", "at_risk"), ("engagement", ("reactivated",))),
)


def is_question(activity: ActivityV1) -> bool:
    """A thread that asks something: flagged by the source, or a title or text ending in '?'."""
    if activity.kind != "post":
        return False
    if activity.properties.get("question") is True:
        return True
    texts = (
        activity.target.thread_title if activity.target else None,
        activity.properties.get("text"),
    )
    return any(isinstance(t, str) and t.rstrip().endswith("?") for t in texts)


async def project_facts(uow: UnitOfWork, events: Sequence[Envelope]) -> None:
    """Record the facts the figures need; set-based, one statement per kind of fact."""
    acquired = [e.data for e in events if isinstance(e.data, MemberAcquiredV1)]
    helped = [(e.id, e.data) for e in events if isinstance(e.data, PeerHelpV1)]
    risks = [(e.id, e.data) for e in events if isinstance(e.data, ChurnRiskV1)]
    questions = [e.data for e in events if isinstance(e.data, ActivityV1) and is_question(e.data)]
    conn = uow.conn
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
    if risks:
        await conn.execute(
            "INSERT INTO flywheel_churn_risk (event_id, member_id, occurred_at)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])"
            " ON CONFLICT DO NOTHING",
            [i for i, _ in risks],
            [r.member_id for _, r in risks],
            [r.occurred_at for _, r in risks],
        )


class Conversion(BaseModel):
    from_dimension: str
    from_stage: str
    to_dimension: str
    to_stage: str
    entered: int = Field(description="Members who entered the first stage within the window.")
    converted: int = Field(
        description="Of those, members who reached the second stage after it, before `to`."
    )
    rate: float | None = Field(description="converted / entered (null when none entered).")


class TimeInStage(BaseModel):
    dimension: str
    stage: str
    left: int = Field(description="Members who left the stage within the window.")
    median_days: float = Field(
        description="Median of (time of leaving - time of entering) over those members."
    )


class FlywheelReport(BaseModel):
    window_from: datetime | None
    window_to: datetime | None
    members_per_stage: dict[str, dict[str, int]] = Field(
        description="Current stage counts per dimension (not windowed)."
    )
    entered_per_stage: dict[str, dict[str, int]] = Field(
        description="Members who entered each stage within the window."
    )
    conversions: list[Conversion]
    time_in_stage: list[TimeInStage]
    new_members: int = Field(description="visitor/none -> member transitions in the window.")
    new_members_via_referral: int = Field(
        description="member.acquired.v1 (via referral) events in the window."
    )
    referral_share: float | None = Field(
        description="new_members_via_referral / new_members: the loop's strength."
    )
    peer_help: int = Field(description="signal.peer_help.v1 events in the window.")
    peer_help_accepted: int = Field(description="Of those, accepted answers.")
    questions: int = Field(
        description="Questions asked in the window (posts flagged `question` or ending in ?)."
    )
    questions_answered_by_peers: int = Field(
        description="Of those, questions whose thread got peer help from another member "
        "before `to`."
    )
    peer_answer_share: float | None = Field(description="questions_answered_by_peers / questions.")
    churn_risk_signals: int = Field(description="signal.churn_risk.v1 events in the window.")
    at_risk_now: int = Field(description="Members currently at_risk.")


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


async def flywheel_report(
    conn: Connection, start: datetime | None, end: datetime | None
) -> FlywheelReport:
    window = (
        "occurred_at >= coalesce($1, '-infinity'::timestamptz)"
        " AND occurred_at < coalesce($2, 'infinity'::timestamptz)"
    )

    members: dict[str, dict[str, int]] = {}
    for r in await conn.fetch(
        "SELECT dimension, stage, count(*) AS n FROM member_stages GROUP BY dimension, stage"
    ):
        members.setdefault(r["dimension"], {})[r["stage"]] = r["n"]
    entered: dict[str, dict[str, int]] = {}
    for r in await conn.fetch(
        f"SELECT dimension, to_stage, count(DISTINCT member_id) AS n FROM journey_transitions"
        f" WHERE {window} GROUP BY dimension, to_stage",
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
                WHERE dimension = $3 AND to_stage = $4 AND {window} GROUP BY member_id)
            SELECT count(*) AS entered,
                   count(*) FILTER (WHERE EXISTS (
                       SELECT 1 FROM journey_transitions t
                       WHERE t.member_id = e.member_id AND t.dimension = $5
                         AND t.to_stage = ANY($6::text[]) AND t.occurred_at >= e.at
                         AND t.occurred_at < coalesce($2, 'infinity'::timestamptz)))
                       AS converted
            FROM entered e
            """,
            start,
            end,
            fd,
            fs,
            td,
            ts,
        )
        assert row is not None
        conversions.append(
            Conversion(
                from_dimension=fd,
                from_stage=fs,
                to_dimension=td,
                to_stage=ts[0],
                entered=row["entered"],
                converted=row["converted"],
                rate=_share(row["converted"], row["entered"]),
            )
        )

    time_in_stage = [
        TimeInStage(
            dimension=r["dimension"],
            stage=r["stage"],
            left=r["n"],
            median_days=round(r["median_s"] / 86400, 2),
        )
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
            FROM spans WHERE occurred_at IS NOT NULL AND {window}
            GROUP BY dimension, stage ORDER BY dimension, stage
            """,
            start,
            end,
        )
    ]

    new_members = await conn.fetchval(
        f"SELECT count(DISTINCT member_id) FROM journey_transitions"
        f" WHERE dimension = 'awareness' AND to_stage = 'member' AND {window}",
        start,
        end,
    )
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
    question_row = await conn.fetchrow(
        f"""
        SELECT count(*) AS n, count(*) FILTER (WHERE EXISTS (
            SELECT 1 FROM flywheel_peer_help h
            WHERE h.thread_id = q.thread_id AND h.helped_member_id = q.member_id
              AND h.helper_member_id <> q.member_id
              AND h.occurred_at < coalesce($2, 'infinity'::timestamptz))) AS answered
        FROM flywheel_questions q WHERE {window.replace("occurred_at", "q.occurred_at")}
        """,
        start,
        end,
    )
    assert question_row is not None
    churn = await conn.fetchval(
        f"SELECT count(*) FROM flywheel_churn_risk WHERE {window}", start, end
    )
    at_risk = await conn.fetchval(
        "SELECT count(*) FROM member_stages WHERE dimension = 'engagement' AND stage = 'at_risk'"
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
        referral_share=_share(via_referral, new_members),
        peer_help=help_row["n"],
        peer_help_accepted=help_row["accepted"],
        questions=question_row["n"],
        questions_answered_by_peers=question_row["answered"],
        peer_answer_share=_share(question_row["answered"], question_row["n"]),
        churn_risk_signals=churn,
        at_risk_now=at_risk,
    )


def router(pool: Callable[[], asyncpg.Pool | None]) -> APIRouter:
    routes = APIRouter(tags=["journey"])

    @routes.get(
        "/v1/flywheel",
        dependencies=[auth.require("read")],
        summary="Is the flywheel turning?",
        description="Stage counts, stage-to-stage conversion, median time in stage, the "
        "share of new members who came through a member's referral, peer help and the share "
        "of questions answered by peers, and churn risk, over an event-time window "
        "[from, to). Both bounds are optional.",
        response_model=FlywheelReport,
    )
    async def flywheel(
        start: Annotated[
            datetime | None, Query(alias="from", description="Window start (ISO 8601).")
        ] = None,
        end: Annotated[
            datetime | None, Query(alias="to", description="Window end (ISO 8601).")
        ] = None,
    ) -> FlywheelReport:
        for name, value in (("from", start), ("to", end)):
            if value is not None and value.tzinfo is None:
                raise ProblemError(
                    422,
                    INVALID_WINDOW,
                    "Invalid window",
                    f"`{name}` needs a time zone, e.g. 2026-11-01T00:00:00Z",
                )
        if start and end and start >= end:
            raise ProblemError(422, INVALID_WINDOW, "Invalid window", "`from` must be before `to`")
        current = pool()
        if current is None:
            raise Unavailable("database", "the read model is starting")
        try:
            async with current.acquire() as conn:
                return await flywheel_report(conn, start, end)
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", f"the read model's database: {exc}") from exc

    return routes
