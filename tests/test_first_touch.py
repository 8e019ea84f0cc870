"""The first touch, settled in event time (issue 15): on the real broker, a member's sign-up
and the anonymous visit that brought them are read in either order; the sign-up's transition
states what awareness knew when it decided it, and member.first_touch.v1, stated once
awareness's clock has passed the joining, is the same event either way. The gateway's figure
takes it."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from services.awareness import domain
from services.awareness.__main__ import SPEC as AWARENESS
from services.gateway.bootstrap import SPEC as GATEWAY
from shared.contracts import FirstTouchV1
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

VISIT = activity(
    "anon-q",
    "page_view",
    day=0,
    anonymous=True,
    source="web",
    activity_id="pv-q",
    properties={"referrer": "https://www.google.com/search?q=flywheel"},
)
SIGNUP = activity(
    "quinn", "signup", day=1, source="web", activity_id="su-q",
    properties={"anonymous_id": "anon-q"},
)  # fmt: skip


def test_the_settled_first_touch_is_the_persons_earliest() -> None:
    visit = domain.observe(None, VISIT, domain.Rules())
    signup = domain.observe(None, SIGNUP, domain.Rules())
    assert visit.person is not None and signup.person is not None
    assert domain.settled_first_touch(visit.person) is None  # a visitor has not joined
    merged = domain.merge_history(signup.person, visit.person)
    settled = domain.settled_first_touch(merged)
    assert settled is not None
    assert (settled.channel, settled.joined_at, settled.first_seen_at) == (
        "search",
        SIGNUP.occurred_at,
        VISIT.occurred_at,
    )


async def consumed(service: ConsumingService, count: int) -> None:
    for _ in range(600):
        if service.processor is not None and service.processor.stats.consumed >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the service did not consume {count} records")


@pytest.mark.parametrize("signup_first", [True, False], ids=["signup-first", "visit-first"])
async def test_the_first_touch_is_the_same_whichever_is_read_first(
    namespace: Namespace, signup_first: bool
) -> None:
    urls = {s.name: await namespace.create_database(s.name) for s in (AWARENESS, GATEWAY)}
    order = [SIGNUP, VISIT] if signup_first else [VISIT, SIGNUP]
    async with (
        running(AWARENESS, namespace.settings(urls["awareness"])) as awareness,
        running(GATEWAY, namespace.settings(urls["gateway"])),
    ):
        for n, a in enumerate(order, start=1):  # one at a time: the order is the test's
            await publish_activities(namespace, [a])
            await consumed(awareness, n)
        await publish_tick(namespace, T0.replace(day=T0.day + 5))
        lifecycle = envelopes(await read_topic(namespace, "member-lifecycle", until=1))
        transitions = envelopes(await read_topic(namespace, "journey-transitions", until=1))

        conn = await asyncpg.connect(urls["gateway"])
        try:
            row = None
            for _ in range(200):
                row = await conn.fetchrow(
                    "SELECT channel, detail, settled FROM flywheel_first_touch"
                    " WHERE member_id = 'quinn' AND settled"
                )
                if row is not None:
                    break
                await asyncio.sleep(0.05)
        finally:
            await conn.close()

    [settled] = [e for e in lifecycle if isinstance(e.data, FirstTouchV1)]
    assert settled.key == "quinn"
    assert settled.data == FirstTouchV1(
        member_id="quinn",
        channel="search",
        detail="www.google.com",
        first_seen_at=VISIT.occurred_at,
        joined_at=SIGNUP.occurred_at,
        occurred_at=SIGNUP.occurred_at,
    ), settled.data
    joined = next(e.data for e in transitions if getattr(e.data, "member_id", None) == "quinn")
    # the sign-up's transition states the sign-up's own touch, decided before any merge
    assert joined.details.first_touch_channel == "direct"  # type: ignore[attr-defined]
    assert row is not None and (row["channel"], row["settled"]) == ("search", True)
