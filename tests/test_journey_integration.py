"""The whole journey on the real broker and PostgreSQL (issue 15): a prospect reads the pricing
page, signs up, asks, is answered, buys and renews; another customer cancels; newcomers go
quiet; a question stays unanswered; a member asks for a feature. Every new signal is read
back from its topic, the new awareness stages from journey-transitions, and the figures from
the gateway's read model."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import asyncpg
import pytest

from services.advocacy.__main__ import SPEC as ADVOCACY
from services.awareness.__main__ import SPEC as AWARENESS
from services.engagement.__main__ import SPEC as ENGAGEMENT
from services.gateway import flywheel
from services.gateway.bootstrap import SPEC as GATEWAY
from shared.contracts import (
    NEWCOMER_DROP_OFF,
    PRODUCT_FEEDBACK,
    QUESTION_ANSWERED,
    QUESTION_UNANSWERED,
    NewcomerDropOffV1,
    ProductFeedbackV1,
    QuestionAnsweredV1,
    QuestionUnansweredV1,
    StageChangedV1,
)
from shared.service import ConsumingService
from tests.conftest import (
    Namespace,
    envelopes,
    publish_activities,
    publish_tick,
    read_topic,
    running,
)
from tests.factories import T0, activity

pytestmark = pytest.mark.integration


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


async def consumed(service: ConsumingService, count: int, timeout_s: float = 30.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if service.processor is not None and service.processor.stats.consumed >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the service did not consume {count} records in {timeout_s} s")


# Phases are published one after another, each once the services have read the one before:
# within a phase nothing is due, so any interleaving of partitions is on time.
PHASES = [
    [
        activity("anon-p", "page_view", day=0, anonymous=True, source="web",
                 activity_id="pv-1", properties={"url": "https://example.com/pricing"}),
    ],
    [
        activity("pat", "signup", day=1, source="web", activity_id="su-pat",
                 properties={"anonymous_id": "anon-p"}),
        activity("pat", "page_view", day=1.5, source="web", activity_id="pv-2",
                 properties={"url": "https://example.com/docs/install"}),
        activity("cy", "signup", day=1, source="web", activity_id="su-cy"),
        activity("pat", "post", day=2, thread_id="q-p", thread_author="pat",
                 activity_id="ask-pat", properties={"question": True}),
        activity("ada", "reply", at=day(2) + timedelta(hours=3), thread_id="q-p",
                 thread_author="pat", activity_id="answer-ada"),
        activity("cy", "purchase", day=2, source="crm", activity_id="buy-cy"),
    ],
    [
        activity("pat", "purchase", day=5, source="crm", activity_id="buy-pat"),
        activity("nell", "signup", day=3, activity_id="su-nell"),
        activity("nell", "reaction", day=4, activity_id="like-nell"),
        activity("bob", "post", day=10, thread_id="q-b", thread_author="bob",
                 activity_id="ask-bob", properties={"question": True}),
        activity("ada", "feature_request", day=12, activity_id="fr-ada",
                 properties={"text": "Please add dark mode"}),
    ],
    [
        activity("cy", "cancellation", day=30, source="crm", activity_id="cancel-cy"),
        activity("pat", "renewal", day=35, source="crm", activity_id="renew-pat"),
    ],
]  # fmt: skip


async def test_the_whole_journey_signals_stages_and_figures(namespace: Namespace) -> None:
    urls = {
        s.name: await namespace.create_database(s.name)
        for s in (AWARENESS, ENGAGEMENT, ADVOCACY, GATEWAY)
    }
    async with (
        running(AWARENESS, namespace.settings(urls["awareness"])) as awareness,
        running(ENGAGEMENT, namespace.settings(urls["engagement"])) as engagement,
        running(ADVOCACY, namespace.settings(urls["advocacy"])),
        running(GATEWAY, namespace.settings(urls["gateway"])),
    ):
        total = 0
        for phase in PHASES:
            await publish_activities(namespace, phase)
            total += len(phase)
            await consumed(engagement, total)
            await consumed(awareness, total)
        await publish_tick(namespace, day(60))  # every partition: every clock passes day 60
        await consumed(engagement, total + 3)

        support = envelopes(await read_topic(namespace, "signals.support", until=3))
        success = envelopes(await read_topic(namespace, "signals.success", until=5))
        product = envelopes(await read_topic(namespace, "signals.product", until=1))
        transitions = envelopes(await read_topic(namespace, "journey-transitions", until=16))

        conn = await asyncpg.connect(urls["gateway"])
        try:
            report = None
            for _ in range(150):
                report = await flywheel.flywheel_report(conn, None, None)
                if (
                    report.retention.customers_per_stage["churned"]
                    and report.retention.customers_per_stage["retained"]
                    and sum(report.newcomer_drop_offs.values()) == 5
                    and report.time_to_first_response.unanswered_signals
                    and report.product_feedback.get("feature_request")
                ):
                    break
                await asyncio.sleep(0.2)
        finally:
            await conn.close()

    # --- unanswered and answered questions, on signals.support
    answered = [e.data for e in support if isinstance(e.data, QuestionAnsweredV1)]
    unanswered = [e.data for e in support if isinstance(e.data, QuestionUnansweredV1)]
    assert {e.type for e in support} >= {QUESTION_ANSWERED.type, QUESTION_UNANSWERED.type}
    [a] = answered
    assert (a.member_id, a.thread_id, a.question_activity_id, a.answer_activity_id) == (
        "pat",
        "q-p",
        "ask-pat",
        "answer-ada",
    )
    assert a.answered_by_member_id == "ada" and a.first_response_s == 3 * 3600
    assert not a.was_unanswered
    [u] = unanswered
    assert (u.member_id, u.thread_id, u.occurred_at) == ("bob", "q-b", day(11))

    # --- the honeymoon drop-off, on signals.success
    drops = {e.data.member_id: e.data for e in success if isinstance(e.data, NewcomerDropOffV1)}
    assert all(e.type == NEWCOMER_DROP_OFF.type for e in success)
    assert set(drops) == {"nell", "pat", "cy", "ada", "bob"}
    nell = drops["nell"]
    assert (nell.newcomer_as, nell.started_at, nell.last_active_at, nell.occurred_at) == (
        "member",
        day(3),
        day(4),
        day(18),
    )
    assert nell.activities == {"signup": 1, "reaction": 1}
    assert (drops["pat"].newcomer_as, drops["pat"].occurred_at) == ("customer", day(19))

    # --- product feedback, on signals.product
    [fb] = [e.data for e in product if isinstance(e.data, ProductFeedbackV1)]
    assert product[0].type == PRODUCT_FEEDBACK.type and product[0].key == "ada"
    assert (fb.feedback_kind, fb.excerpt, fb.from_champion) == (
        "feature_request",
        "Please add dark mode",
        False,
    )

    # --- consideration and retention, on journey-transitions
    moves = {
        (c.member_id, c.from_stage, c.to_stage): c
        for e in transitions
        if isinstance(c := e.data, StageChangedV1) and c.dimension == "awareness"
    }
    assert ("anon-p", "visitor", "merged") in moves  # the visitor id itself stays a visitor
    assert moves[("pat", "member", "considering")].caused_by == ["pv-2"]
    bought = moves[("pat", "considering", "customer")]
    assert bought.details is not None
    assert bought.details.first_touch_channel == "direct"
    assert (bought.details.considered, bought.details.community_influenced) == (True, True)
    assert ("pat", "customer", "retained") in moves
    assert ("cy", "customer", "churned") in moves
    cy = moves[("cy", "member", "customer")].details
    assert cy is not None and cy.community_influenced is False

    # --- the figures
    assert report is not None
    influence = report.community_influenced_conversion
    assert (influence.customers, influence.community_influenced) == (2, 1)
    assert (influence.considering_entered, influence.considering_converted) == (1, 1)
    assert influence.considering_converted_with_community == 1
    retention = report.retention
    assert retention.customers_per_stage == {
        "customer": 0,
        "retained": 1,
        "lapsed": 0,
        "churned": 1,
    }
    assert retention.took_part_per_stage["retained"] == 1  # pat asked in the community
    assert retention.took_part_per_stage["churned"] == 0  # cy never took part
    ttfr = report.time_to_first_response
    assert (ttfr.answered, ttfr.unanswered_signals, ttfr.median_hours, ttfr.p90_hours) == (
        1,
        1,
        3.0,
        3.0,
    )
    assert report.newcomer_drop_offs == {"member": 3, "customer": 2}
    assert report.product_feedback == {"feature_request": 1, "from_champions": 0}
    assert sum(t.new_members for t in report.first_touch) == 5
    health = {r.name: r for r in report.health}
    assert (health["active_members"].count, health["active_members"].of) == (4, 5)
    assert health["active_members"].ratio == 0.8
    assert health["peer_answer_share"].ratio == 0.5
    assert health["new_members_engaged_within_30_days"].ratio == 0.0
    assert health["advocates_per_100_active_members"].ratio == 0.0


async def test_questions_and_newcomers_round_trip_merge_and_erase(namespace: Namespace) -> None:
    """The engagement store's new tables: saved with their next deadline, found by a sweep,
    folded into the survivor of a merge, and gone with an erased member."""
    from services.engagement import store
    from services.engagement.domain import Newcomer, Question, Rules
    from shared.lifecycle.rewrite import ERASED
    from shared.postgres import PLUMBING_MIGRATIONS, migrate

    url = await namespace.create_database("engagement")
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    assert pool is not None
    rules = Rules()
    try:
        await migrate(pool, [PLUMBING_MIGRATIONS, ENGAGEMENT.migrations])
        asked = Question("discourse:q-1", "q-1", "b", "ask-1", None, "Why?", day(0))
        answered = Question(
            "discourse:q-2", "q-2", "c", "ask-2", None, None, day(0), day(0.1), "r-1", "b"
        )
        new_b = Newcomer("b", "member", day(0), day(1), (("post", 1),))
        new_a = Newcomer("a", "member", day(2), day(2))
        async with pool.acquire() as conn:
            await store.save_questions(conn, [asked, answered], rules)
            await store.save_newcomers(conn, [new_b, new_a], rules)
            assert await store.load_questions(conn, ["discourse:q-1", "discourse:q-2"]) == {
                "discourse:q-1": asked,
                "discourse:q-2": answered,
            }
            assert await store.load_newcomers(conn, ["a", "b"]) == {"a": new_a, "b": new_b}
            # due by the watermark: q-1's unanswered deadline (day 1), q-2's answer (day 0.1),
            # b's drop-off (day 15); not a's (day 16)
            assert sorted(await store.load_questions(conn, [], due_by=day(1))) == [
                "discourse:q-1",
                "discourse:q-2",
            ]
            assert sorted(await store.load_newcomers(conn, [], due_by=day(15))) == ["b"]

            await store.merge_journey(conn, "a", "b")  # b is a now; a's honeymoon stays
            questions = await store.load_questions(conn, ["discourse:q-1", "discourse:q-2"])
            assert questions["discourse:q-1"].asker_member_id == "a"
            assert questions["discourse:q-2"].answered_by == "a"
            assert await store.load_newcomers(conn, ["a", "b"]) == {"a": new_a}

            await store.erase_journey(conn, ["a"])
            left = await store.load_questions(conn, ["discourse:q-1", "discourse:q-2"])
            assert list(left) == ["discourse:q-2"]  # c's question stays, without a's answer
            assert (left["discourse:q-2"].answered_by, left["discourse:q-2"].answered_at) == (
                None,
                None,
            )
            assert ERASED not in str(left)
            assert await store.load_newcomers(conn, ["a"]) == {}
    finally:
        await pool.close()
