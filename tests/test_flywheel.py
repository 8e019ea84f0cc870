"""The flywheel figures, from a small community whose loop we know by heart."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from fastapi.testclient import TestClient

from services.advocacy.__main__ import SPEC as ADVOCACY
from services.awareness.__main__ import SPEC as AWARENESS
from services.engagement.__main__ import SPEC as ENGAGEMENT
from services.gateway import flywheel, reports
from services.gateway.bootstrap import SPEC as GATEWAY
from services.gateway.bootstrap import create_app
from tests.conftest import Namespace, publish_activities, publish_tick, running
from tests.factories import T0, activity


def test_questions_are_flagged_posts_or_end_in_a_question_mark() -> None:
    assert flywheel.is_question(activity("m", "post", properties={"question": True}))
    assert flywheel.is_question(activity("m", "post", properties={"text": "Why is lag high? "}))
    assert not flywheel.is_question(activity("m", "post", properties={"text": "Release notes"}))
    assert not flywheel.is_question(activity("m", "reply", properties={"text": "why?"}))


def test_window_must_be_ordered_and_zoned() -> None:
    from tests.test_gateway_api import AUTH, FakeJourney, Readiness, RecordingPublisher, settings

    app = create_app(
        publisher=RecordingPublisher(),
        journey=FakeJourney(),
        readiness=Readiness(),
        settings=settings(),
    )
    app.include_router(flywheel.router(reports.from_pool(lambda: None)))
    client = TestClient(app, raise_server_exceptions=False, headers=AUTH)
    assert (
        client.get("/v1/flywheel?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z").status_code
        == 422
    )
    assert client.get("/v1/flywheel?from=2026-02-01T00:00:00").status_code == 422
    assert client.get("/v1/flywheel").status_code == 503  # no database yet: retry later


@pytest.mark.integration
async def test_figures_show_the_loop_peer_help_and_conversion(namespace: Namespace) -> None:
    urls = {
        s.name: await namespace.create_database(s.name)
        for s in (AWARENESS, ENGAGEMENT, ADVOCACY, GATEWAY)
    }
    log = [
        activity("anon-1", "page_view", anonymous=True, day=0, source="web"),
        activity("ada", "signup", day=1, source="web", properties={"anonymous_id": "anon-1"}),
        activity("bob", "signup", day=2, source="web", properties={"referred_by": "ada"}),
        activity("cy", "signup", day=2, source="web"),
        # bob asks two questions; ada answers one, staff the other
        activity("bob", "post", day=3, thread_id="q-1", properties={"question": True}),
        activity("bob", "post", day=3, thread_id="q-2", properties={"text": "How to scale?"}),
        activity("ada", "reply", day=4, thread_id="q-1", thread_author="bob"),
        activity("ada", "answer_accepted", day=4.5, thread_id="q-1", thread_author="bob"),
        activity("staff", "reply", day=4, thread_id="q-2", thread_author="bob", team=True),
        activity("ada", "event_talk", day=5),
        activity("bob", "event_talk", day=5),
        activity("cy", "purchase", day=6, source="crm"),
        activity("anon-9", "page_view", day=40, anonymous=True, source="web"),
    ]
    async with (
        running(AWARENESS, namespace.settings(urls["awareness"])),
        running(ENGAGEMENT, namespace.settings(urls["engagement"])),
        running(ADVOCACY, namespace.settings(urls["advocacy"])),
        running(GATEWAY, namespace.settings(urls["gateway"])),
    ):
        await publish_activities(namespace, log)
        # the clock on every partition passes 21 quiet days (not yet 52): ada and bob at risk
        await publish_tick(namespace, T0 + timedelta(days=40))
        conn = await asyncpg.connect(urls["gateway"])
        try:
            report = None
            for _ in range(150):
                report = await flywheel.flywheel_report(conn, None, None)
                if (
                    report.churn_risk_signals
                    and report.new_members_via_referral
                    and report.members_per_stage.get("advocacy")
                ):
                    break
                await asyncio.sleep(0.2)
            assert report is not None
            window = await flywheel.flywheel_report(conn, T0 + timedelta(days=20), None)
        finally:
            await conn.close()

    assert report.new_members == 3
    assert report.new_members_via_referral == 1 and report.referral_share == pytest.approx(
        1 / 3, abs=1e-3
    )
    assert (report.questions, report.questions_answered_by_peers) == (2, 1)  # staff is no peer
    assert report.peer_answer_share == 0.5
    assert (report.peer_help, report.peer_help_accepted) == (2, 1)
    assert report.members_per_stage["awareness"] == {
        "visitor": 1,
        "merged": 1,
        "member": 2,
        "customer": 1,
    }
    # ada: an advocate at day 5 (2 + 5 + 8 >= 12), then a champion at the review of
    # 2026-02-06 (day 31.6), which the clock passed at the tick of day 40
    assert report.members_per_stage["advocacy"] == {"champion": 1}
    visitor_to_member = next(
        c for c in report.conversions if (c.from_stage, c.to_stage) == ("visitor", "member")
    )
    assert (visitor_to_member.entered, visitor_to_member.converted) == (2, 1)  # anon-9 stays
    member_to_customer = next(
        c for c in report.conversions if (c.from_stage, c.to_stage) == ("member", "customer")
    )
    assert (member_to_customer.entered, member_to_customer.converted) == (3, 1)
    assert report.churn_risk_signals == 2 and report.at_risk_now == 2
    visitor_time = next(
        t for t in report.time_in_stage if (t.dimension, t.stage) == ("awareness", "visitor")
    )
    assert visitor_time.median_days == 1.0
    # a window after the sign-ups sees no new members, but the churn
    assert window.new_members == 0 and window.churn_risk_signals == 2


@pytest.mark.integration
async def test_settled_first_touch_and_champion_feedback_reach_the_figures(
    namespace: Namespace,
) -> None:
    """The projection: member.first_touch.v1 wins over what transitions' details said, before
    or after them, and nothing later overrides it; signal.champion_feedback.v1 flags the
    feedback it names as a champion's."""
    from shared.cloudevents import Envelope
    from shared.contracts import (
        ChampionFeedbackV1,
        FirstTouchV1,
        ProductFeedbackV1,
        StageChangedV1,
        TransitionDetails,
    )

    url = await namespace.create_database("gateway")
    async with running(GATEWAY, namespace.settings(url)):
        pass  # the migrations

    def envelope(event_id: str, data: Any) -> Envelope:
        return Envelope(
            id=event_id, type="t", source="/tests", time=T0, data=data, key=data.member_id
        )

    def joined(member: str, channel: str, day: float) -> Envelope:
        return envelope(
            f"joined-{member}-{day}",
            StageChangedV1(
                member_id=member,
                dimension="awareness",
                from_stage=None,
                to_stage="member",
                reason="test",
                occurred_at=T0 + timedelta(days=day),
                details=TransitionDetails(first_touch_channel=channel),
            ),
        )

    def settled(member: str, channel: str | None) -> Envelope:
        return envelope(
            f"settled-{member}",
            FirstTouchV1(
                member_id=member,
                channel=channel,
                first_seen_at=T0,
                joined_at=T0 + timedelta(days=1),
                occurred_at=T0 + timedelta(days=1),
            ),
        )

    feedback = ProductFeedbackV1(
        member_id="ada",
        feedback_kind="feature_request",
        matched="feature_request",
        source="discourse",
        activity_id="fr-1",
        stages={"engagement": "engaged"},
        from_champion=False,
        occurred_at=T0 + timedelta(days=2),
    )
    flag = ChampionFeedbackV1(
        member_id="ada",
        feedback_event_id="fb-1",
        feedback_kind="feature_request",
        source="discourse",
        activity_id="fr-1",
        occurred_at=T0 + timedelta(days=2),
    )
    conn = await asyncpg.connect(url)
    try:
        project = flywheel.journey.project_journey_facts
        # ada: the details first, then the settled touch, then later details (ignored)
        await project(conn, [joined("ada", "direct", 1), envelope("fb-1", feedback)])
        await project(conn, [settled("ada", "search"), joined("ada", "social", 9)])
        # bob: settled and details in one batch, details after; cy: settled with no channel
        await project(conn, [settled("bob", "referral"), joined("bob", "direct", 5)])
        await project(conn, [settled("cy", None), envelope("flag-1", flag)])
        rows = await conn.fetch(
            "SELECT member_id, channel, settled FROM flywheel_first_touch ORDER BY member_id"
        )
        champion = await conn.fetchval(
            "SELECT from_champion FROM flywheel_feedback WHERE event_id = 'fb-1'"
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [
        ("ada", "search", True),
        ("bob", "referral", True),
        ("cy", None, True),
    ]
    assert champion is True
