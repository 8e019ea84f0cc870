"""One member per person, on the real broker and PostgreSQL: the gateway (in process, its
HTTP API, read model and outbox relay) and the three stage services.

Two identities of one person, each with a history of its own, are linked by an operator: the
gateway publishes `member.merged.v1` and every service folds the merged member into the
survivor (state, stages, journey); activity still keyed by the merged id lands on the
survivor; the webhooks' resolver joins identities by verified email.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from services.advocacy.__main__ import SPEC as ADVOCACY
from services.awareness.__main__ import SPEC as AWARENESS
from services.engagement.__main__ import SPEC as ENGAGEMENT
from services.gateway.bootstrap import build_app
from services.gateway.identity import IdentityStore
from shared.cloudevents import derive_event_id
from shared.contracts import ActivityV1, StageChangedV1
from tests.conftest import (
    PSEUDONYM_KEY,
    Namespace,
    envelopes,
    member_of,
    publish_activities,
    publish_tick,
    read_topic,
    running,
)
from tests.factories import T0, activity

pytestmark = pytest.mark.integration

API_KEY = "identity-tests-admin-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
STAGE_SERVICES = (AWARENESS, ENGAGEMENT, ADVOCACY)
IN_PROCESS_GRACE_S = 86_400.0
"""The gateway's lifespan arms a shutdown watchdog (`ConsumingService.on_shutdown_signal`) that
ends the process `shutdown_grace_s` after shutdown began and is never disarmed: in process, it
would end the whole test session. A day is longer than any session."""


@dataclass
class Deployment:
    """The four services of one test, and what a test needs to look inside them."""

    client: httpx.AsyncClient
    urls: dict[str, str]
    identities: IdentityStore

    async def fetch(self, service: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.urls[service])
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    async def pairs(self, service: str, sql: str, *args: Any) -> dict[Any, Any]:
        """A two-column query as a dict."""
        return {r[0]: r[1] for r in await self.fetch(service, sql, *args)}

    async def post(self, *activities: ActivityV1) -> None:
        body = {"activities": [a.model_dump(mode="json") for a in activities]}
        response = await self.client.post("/v1/activities", json=body)
        assert response.status_code == 202, response.text


@pytest.fixture
async def deployment(namespace: Namespace) -> AsyncIterator[Deployment]:
    urls = {name: await namespace.create_database(name) for name in (*_names(), "gateway")}
    gateway = build_app(
        namespace.settings(
            urls["gateway"],
            clock_tick_interval_s=0,
            api_keys=f"tests={API_KEY}:ingest,read,admin",
            shutdown_grace_s=IN_PROCESS_GRACE_S,
        )
    )
    pool = await asyncpg.create_pool(urls["gateway"], min_size=1, max_size=2)
    assert pool is not None
    async with (
        running(AWARENESS, namespace.settings(urls["awareness"])),
        running(ENGAGEMENT, namespace.settings(urls["engagement"])),
        running(ADVOCACY, namespace.settings(urls["advocacy"])),
        gateway.router.lifespan_context(gateway),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gateway), base_url="http://gateway", headers=AUTH
        ) as client,
    ):
        identities = IdentityStore(lambda: pool)
        await identities.start(SecretStr(PSEUDONYM_KEY))  # the in-process gateway's key
        try:
            yield Deployment(client, urls, identities)
        finally:
            await pool.close()


def _names() -> tuple[str, ...]:
    return tuple(s.name for s in STAGE_SERVICES)


async def eventually(
    check: Callable[[], Awaitable[None]], timeout_s: float = 45.0, every_s: float = 0.2
) -> None:
    """Retry an asserting check until it passes (the services are asynchronous)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await check()
            return
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(every_s)


A, B = member_of("discourse", 77), member_of("github", 1001)  # the identities' member ids
HELPED, NEWBIE = "discourse:5", "web:newbie-3"


def _histories() -> list[ActivityV1]:
    """A on the forum, B on GitHub and in the product. Apart, neither is engaged (5 and 6 <
    8), an advocate (2 and 10 < 12), or a customer on the forum account; together, all three.
    B's referral is credited because the newcomer B brought in becomes engaged (1 + 6 + 3)."""
    return [
        activity(HELPED, "signup", day=0),
        activity(HELPED, "post", day=0.5, thread_id="q-9"),
        activity(A, "signup", day=1),  # engagement 1
        activity(A, "reply", day=2, thread_id="q-9", thread_author=HELPED),  # 4; peer help: 2
        activity(B, "code_contribution", day=1, source="github"),  # awareness: member; 6
        activity(B, "purchase", day=3, source="product"),  # customer
        activity(NEWBIE, "signup", day=3.5, source="web", properties={"referred_by": B}),
        activity(NEWBIE, "code_contribution", day=3.6, source="github"),
        activity(NEWBIE, "post", day=3.7, thread_id="q-10"),  # engaged: B's referral, 10
    ]


async def test_linking_an_identity_merges_the_person_in_every_service(
    namespace: Namespace, deployment: Deployment
) -> None:
    d = deployment
    assert await d.identities.resolve("discourse", "77", "ada@example.com") == A
    assert await d.identities.resolve("github", "1001") == B
    await d.post(*_histories())
    await publish_tick(namespace, T0 + timedelta(days=5))  # advocacy credits once clocks pass

    async def histories_applied() -> None:
        people = await d.pairs("awareness", "SELECT member_id, stage FROM people")
        assert people == {HELPED: "member", A: "member", B: "customer", NEWBIE: "member"}
        adv = await d.pairs("advocacy", "SELECT member_id, score FROM advocacy_members")
        assert adv == {A: 2.0, B: 10.0}
        eng = await d.pairs("engagement", "SELECT member_id, stage FROM participants")
        assert eng == {HELPED: None, A: None, B: None, NEWBIE: "engaged"}

    await eventually(histories_applied)

    # the operator links B's GitHub identity to A: B is A
    response = await d.client.post(
        f"/v1/members/{A}/identities", json={"platform": "github", "platform_user_id": "1001"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "member_id": A,
        "platform": "github",
        "platform_user_id": "1001",
        "email_linked": False,
        "merged": [B],
    }
    merge_id = derive_event_id("member.merged.v1", B, A)

    async def merged_everywhere() -> None:
        people = {r["member_id"]: r for r in await d.fetch("awareness", "SELECT * FROM people")}
        assert set(people) == {HELPED, A, NEWBIE}
        assert people[A]["stage"] == "customer"
        assert people[A]["customer_at"] == _histories()[5].occurred_at
        eng = {r["member_id"]: r for r in await d.fetch("engagement", "SELECT * FROM participants")}
        assert set(eng) == {HELPED, A, NEWBIE}
        assert eng[A]["activities"] == 3 and eng[A]["stage"] == "engaged"
        adv = {
            r["member_id"]: r
            for r in await d.fetch(
                "advocacy", "SELECT member_id, stage, score FROM advocacy_members"
            )
        }
        assert set(adv) == {A}
        assert (adv[A]["stage"], adv[A]["score"]) == ("advocate", 12.0)  # 2 + 10
        credited = await d.fetch("advocacy", "SELECT DISTINCT member_id FROM contributions")
        assert [r["member_id"] for r in credited] == [A]
        for service in (*_names(), "gateway"):
            aliases = await d.fetch(service, "SELECT * FROM lifecycle.member_aliases")
            assert [(r["merged_id"], r["survivor_id"]) for r in aliases] == [(B, A)], service

    await eventually(merged_everywhere)

    # transitions the merge caused, each caused by it: A a customer, engaged, an advocate
    records = envelopes(await read_topic(namespace, "journey-transitions", until=1))
    caused = {
        (e.data.dimension, e.data.from_stage, e.data.to_stage)
        for e in records
        if isinstance(e.data, StageChangedV1) and e.data.caused_by == [merge_id]
    }
    assert caused == {
        ("awareness", "member", "customer"),
        ("engagement", None, "engaged"),
        ("advocacy", None, "advocate"),
    }

    async def journey_under_the_survivor() -> None:
        journey = (await d.client.get(f"/v1/members/{A}/journey")).json()
        assert {dim: s["stage"] for dim, s in journey["stages"].items()} == {
            "awareness": "customer",
            "engagement": "engaged",
            "advocacy": "advocate",
        }
        moves = [(t["dimension"], t["to_stage"]) for t in journey["timeline"]]
        assert moves.count(("awareness", "member")) == 2  # A's sign-up and B's first sight
        assert moves.count(("awareness", "customer")) == 2  # B's purchase, and A by the merge
        # the merged id shows the survivor's journey; it is no longer counted on its own
        assert (await d.client.get(f"/v1/members/{B}/journey")).json()["member_id"] == A
        stages = (await d.client.get("/v1/stages")).json()
        assert stages["members"] == 3 and stages["dimensions"]["awareness"] == {
            "customer": 1,
            "member": 2,
        }

    await eventually(journey_under_the_survivor)

    # late activity still keyed by B lands on A
    late = activity(B, "code_contribution", day=4, source="github")
    await publish_activities(namespace, [late])

    async def late_activity_on_the_survivor() -> None:
        eng = await d.pairs("engagement", "SELECT member_id, activities FROM participants")
        assert eng == {HELPED: 2, A: 4, NEWBIE: 3}
        people = await d.fetch("awareness", "SELECT member_id FROM people WHERE member_id = $1", B)
        assert people == []

    await eventually(late_activity_on_the_survivor)

    # the resolver: B's GitHub identity is A's; a verified email joins a new identity to A
    assert await d.identities.resolve("github", "1001") == A
    assert await d.identities.resolve("slack", "U42", "  Ada@Example.com ") == A
    listed = (await d.client.get(f"/v1/members/{B}/identities")).json()
    assert listed["member_id"] == A and listed["merged_ids"] == [B]
    assert {
        (i["platform"], i["platform_user_id"], i["linked_by"]) for i in listed["identities"]
    } == {
        ("discourse", "77", "first_seen"),
        ("github", "1001", "operator"),
        ("slack", "U42", "email"),
    }
    assert listed["emails"] == ["ada@example.com"]


async def test_a_verified_email_seen_on_a_second_identity_merges_its_member(
    namespace: Namespace, deployment: Deployment
) -> None:
    d = deployment
    # first seen without an email, the GitHub identity became its own member
    gh7, bo = member_of("github", 7), member_of("discourse", 8)
    assert await d.identities.resolve("github", "7") == gh7
    assert await d.identities.resolve("discourse", "8", "bo@example.com") == bo
    await d.post(
        activity(gh7, "code_contribution", source="github"),
        activity(bo, "signup"),
    )
    # now GitHub vouches for the same email: one person, the email's member survives
    assert await d.identities.resolve("github", "7", "bo@example.com") == bo
    lifecycle = envelopes(await read_topic(namespace, "member-lifecycle", until=1))
    assert [(e.type, e.key) for e in lifecycle] == [("member.merged.v1", bo)]

    async def merged() -> None:
        people = await d.pairs("awareness", "SELECT member_id, stage FROM people")
        assert people == {bo: "member"}

    await eventually(merged)
    # linking to a merged id links to its survivor; an erased member takes no identity
    linked = await d.client.post(
        f"/v1/members/{gh7}/identities",
        json={"platform": "slack", "platform_user_id": "U7", "email": "bo@example.com"},
    )
    assert linked.status_code == 200, linked.text
    assert linked.json()["member_id"] == bo and linked.json()["merged"] == []
