"""End to end, as deployed: four service processes, a real broker, a real PostgreSQL.

Activities posted to the gateway over HTTP become the three stage services' transitions on
`journey-transitions` and in the journey API; each service's database holds its own state
and nothing of another's; a bad activity is refused with the field named and nothing is
published for it; SIGTERM stops every service cleanly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import Namespace, envelopes, publish_tick, read_topic, wait_for_journeys
from tests.factories import T0, activity

pytestmark = pytest.mark.integration

SERVICES = ("awareness", "engagement", "advocacy", "gateway")
API_KEY = "end-to-end-key-0123456789"
"""The gateway refuses API calls without a key (FLYWHEEL_API_KEYS); the test client has one."""


@pytest.fixture
async def deployed(namespace: Namespace) -> AsyncIterator[dict[str, Any]]:
    devstack = namespace.stack.devstack
    urls = {name: await namespace.create_database(name) for name in SERVICES}
    for name in SERVICES:
        env = namespace.env(
            urls[name],
            FLYWHEEL_CLOCK_TICK_INTERVAL_S="0",
            FLYWHEEL_API_KEYS=f"e2e={API_KEY}:ingest,read",
        )
        await asyncio.to_thread(devstack.start_service, name, env)
    try:
        yield {"gateway": devstack.endpoints.gateway_url, "databases": urls}
    finally:
        codes = {name: await asyncio.to_thread(devstack.stop_service, name) for name in SERVICES}
        assert codes == dict.fromkeys(SERVICES, 0), f"a service did not stop cleanly: {codes}"


def _body(*activities: Any) -> dict[str, Any]:
    return {"activities": [a.model_dump(mode="json") for a in activities]}


async def test_activity_flows_from_http_to_every_stage_and_back(
    namespace: Namespace, deployed: dict[str, Any]
) -> None:
    # bob answers three of ada's questions (help counts once per thread) and all are accepted
    log = [
        activity(
            "anon-1",
            "page_view",
            anonymous=True,
            day=0,
            source="web",
            properties={"referrer": "https://www.google.com/"},
        ),
        activity("ada", "signup", day=1, source="web", properties={"anonymous_id": "anon-1"}),
        activity("bob", "signup", day=1, source="web", properties={"referred_by": "ada"}),
        *[activity("ada", "post", day=2 + i / 10, thread_id=f"q-{i}") for i in range(3)],
        *[
            activity("bob", "reply", day=3 + i / 10, thread_id=f"q-{i}", thread_author="ada")
            for i in range(3)
        ],
        *[
            activity(
                "bob", "answer_accepted", day=3.5 + i / 10, thread_id=f"q-{i}", thread_author="ada"
            )
            for i in range(3)
        ],
        activity("ada", "reply", day=4, thread_id="q-1"),
        activity("ada", "event_attended", day=4.5, source="events"),
    ]
    async with httpx.AsyncClient(
        base_url=deployed["gateway"], timeout=30, headers={"Authorization": f"Bearer {API_KEY}"}
    ) as client:
        response = await client.post("/v1/activities", json=_body(*log))
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == [a.activity_id for a in log]
        # the gateway's clock ticks (off here: simulated time) reach every partition, so every
        # clock passes the history, and advocacy credits it in event time
        await publish_tick(namespace, T0 + timedelta(days=6))

        journeys = await wait_for_journeys(
            client,
            {
                "ada": {"awareness": "member"},
                "bob": {"awareness": "member", "engagement": "engaged", "advocacy": "advocate"},
            },
        )

        # a bad activity: 4xx naming the field, and nothing published
        before = len(await read_topic(namespace, "member-activity", until=len(log)))
        bad = activity("eve", "post").model_dump(mode="json")
        del bad["actor"]["member_id"]
        refused = await client.post(
            "/v1/activities",
            json={"activities": [activity("eve", "signup").model_dump(mode="json"), bad]},
        )
        assert refused.status_code == 422
        assert refused.headers["content-type"].startswith("application/problem+json")
        pointers = [e["pointer"] for e in refused.json()["errors"]]
        assert pointers == ["/activities/1/actor/member_id"]
        after = len(await read_topic(namespace, "member-activity", until=before, timeout_s=2))
        assert after == before, "a refused request published something"

    ada, bob = journeys["ada"], journeys["bob"]
    assert ada["stages"]["awareness"]["stage"] == "member"
    assert [
        (t["from_stage"], t["to_stage"]) for t in ada["timeline"] if t["dimension"] == "awareness"
    ] == [("visitor", "member")]
    assert bob["stages"]["engagement"]["stage"] == "engaged"
    assert bob["stages"]["advocacy"]["stage"] == "advocate"
    assert "referred by ada" in next(
        t["reason"] for t in bob["timeline"] if t["to_stage"] == "member"
    )

    # the same transitions are on the topic, keyed by member
    transitions = envelopes(await read_topic(namespace, "journey-transitions", until=1))
    on_topic = {(e.key, e.data.dimension, e.data.to_stage) for e in transitions}  # type: ignore[attr-defined]
    in_api = {
        (m, t["dimension"], t["to_stage"]) for m, j in journeys.items() for t in j["timeline"]
    }
    assert in_api <= on_topic

    # each database holds its own state, none holds another's
    async def tables(url: str) -> set[str]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
            return {r["tablename"] for r in rows}
        finally:
            await conn.close()

    plumbing = {"inbox", "outbox", "watermark", "event_clock", "schema_migrations"}
    own = {name: await tables(url) - plumbing for name, url in deployed["databases"].items()}
    for name, names in own.items():
        assert names, f"{name} keeps no state"
        for other, other_names in own.items():
            assert other == name or not names & other_names, f"{name} shares tables with {other}"
    conn = await asyncpg.connect(deployed["databases"]["awareness"])
    try:
        referred = await conn.fetchval("SELECT referred_by FROM people WHERE member_id='bob'")
    finally:
        await conn.close()
    assert referred == "ada"

    # ada's referral was credited when bob became engaged (engagement's transition, across
    # processes), not at his sign-up; and referral credit alone did not make her an advocate
    bob_engaged = next(
        t["occurred_at"]
        for t in bob["timeline"]
        if (t["dimension"], t["to_stage"]) == ("engagement", "engaged")
    )
    conn = await asyncpg.connect(deployed["databases"]["advocacy"])
    try:
        deadline = asyncio.get_running_loop().time() + 30
        credits: list[Any] = []
        while not credits and asyncio.get_running_loop().time() < deadline:
            credits = await conn.fetch(
                "SELECT member_id, occurred_at FROM contributions WHERE kind = 'referral_joined'"
            )
            await asyncio.sleep(0.3)
        ada_stage = await conn.fetchval(
            "SELECT stage FROM advocacy_members WHERE member_id = 'ada'"
        )
    finally:
        await conn.close()
    assert [(c["member_id"], c["occurred_at"].isoformat()) for c in credits] == [
        ("ada", datetime.fromisoformat(bob_engaged).isoformat())
    ]
    assert ada_stage is None
    assert "advocacy" not in ada["stages"]
