"""The member directory on PostgreSQL: the projection of activity, transitions and advocacy
signals; filters, keyset pages that stay stable while transitions arrive, the streamed CSV;
the profile, the leaderboards, cohort retention; bad parameters named in a 400; and the
dashboard's pages behind their login (an empty community shows an empty state)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from services.gateway import dashboard, directory
from services.gateway.bootstrap import SPEC, create_app, handle_batch
from services.gateway.directory import query as dq
from services.gateway.flywheel import router as flywheel_router
from shared.cloudevents import Envelope, derive_event_id
from shared.contracts import (
    ACTIVITY,
    ADVOCATE,
    CHAMPION_NOMINATED,
    STAGE_CHANGED,
    ActivityV1,
    AdvocateV1,
    ChampionNominatedV1,
    StageChangedV1,
)
from shared.postgres import PLUMBING_MIGRATIONS, migrate
from shared.uow import unit_of_work
from tests.conftest import Namespace
from tests.factories import T0, activity
from tests.test_gateway_api import API_KEY, AUTH, FakeJourney, Readiness, RecordingPublisher
from tests.test_gateway_api import settings as api_settings

pytestmark = pytest.mark.integration


def env(data: Any, type_: str, key: str, n: int) -> Envelope:
    return Envelope(
        id=derive_event_id("dir-test", type_, key, str(n)),
        type=type_,
        source="/tests",
        time=T0,
        data=data,
        key=key,
        topic="t",
        offset=n,
    )


_n = iter(range(1, 10**6))


def act(a: ActivityV1) -> Envelope:
    return env(a, ACTIVITY.type, a.actor.member_id, next(_n))


def moved(member: str, dimension: str, to: str, day: float, score: float | None = None) -> Envelope:
    data = StageChangedV1(
        member_id=member,
        dimension=dimension,  # type: ignore[arg-type]
        from_stage=None,
        to_stage=to,
        reason=f"rule fired: {to}",
        score=score,
        occurred_at=T0 + timedelta(days=day),
    )
    return env(data, STAGE_CHANGED.type, member, next(_n))


@pytest.fixture
async def pool(namespace: Namespace) -> AsyncIterator[asyncpg.Pool]:
    url = await namespace.create_database("gateway")
    created = await asyncpg.create_pool(url, min_size=1, max_size=4)
    assert created is not None
    from shared import lifecycle

    await migrate(created, [PLUMBING_MIGRATIONS, SPEC.migrations, lifecycle.MIGRATIONS])
    try:
        yield created
    finally:
        await created.close()


async def apply(pool: asyncpg.Pool, batch: list[Envelope], recent: int = 3) -> None:
    async with unit_of_work(pool) as uow:
        fresh = await uow.claim(batch)
        await handle_batch(uow, fresh, recent)


def app_on(pool: asyncpg.Pool) -> FastAPI:
    settings = api_settings()
    app = create_app(
        publisher=RecordingPublisher(),
        journey=FakeJourney(),
        readiness=Readiness(),
        settings=settings,
    )
    members = directory.Directory(lambda: pool, settings, topics=["journey-transitions"])
    app.include_router(directory.router(members))
    app.include_router(
        flywheel_router(pool.acquire)
    )  # a connection per report, as the reports pool gives
    dashboard.install(app, members, settings)
    return app


async def community(pool: asyncpg.Pool) -> None:
    batch = [
        act(activity("anon-1", "page_view", anonymous=True, day=0, source="web")),
        act(activity("ada", "signup", day=1, source="web", properties={"anonymous_id": "anon-1"})),
        *[act(activity("ada", "reply", day=2 + i, thread_id=f"q-{i}")) for i in range(5)],
        act(activity("bob", "signup", day=3, source="github")),
        act(activity("bob", "post", day=40, source="github")),
        act(activity("cy", "signup", day=50, source="slack")),
        act(activity("staff", "reply", day=4, team=True)),
    ]
    await apply(pool, batch)
    await apply(
        pool,
        [
            moved("anon-1", "awareness", "visitor", 0),
            moved("anon-1", "awareness", "merged", 1),
            moved("ada", "awareness", "member", 1),
            moved("ada", "engagement", "engaged", 3, score=12.5),
            moved("bob", "awareness", "customer", 4),
            moved("bob", "engagement", "at_risk", 30, score=2.0),
            moved("cy", "awareness", "member", 50),
            moved("ada", "advocacy", "champion", 6),
            env(
                AdvocateV1(
                    member_id="ada",
                    score=14.0,
                    evidence={"peer_help": 3},
                    links=["https://forum.example/t/1"],
                    occurred_at=T0 + timedelta(days=5),
                ),
                ADVOCATE.type,
                "ada",
                next(_n),
            ),
            env(
                ChampionNominatedV1(
                    member_id="ada",
                    rank=1,
                    score=20.0,
                    window_start=T0,
                    window_end=T0 + timedelta(days=6),
                    evidence={"peer_help": 5},
                    occurred_at=T0 + timedelta(days=6),
                ),
                CHAMPION_NOMINATED.type,
                "ada",
                next(_n),
            ),
        ],
    )


async def test_directory_filters_pages_and_exports(pool: asyncpg.Pool) -> None:
    await community(pool)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app_on(pool)), base_url="http://gw", headers=AUTH
    )

    everyone = (await client.get("/v1/members", params={"sort": "joined"})).json()
    ids = [m["member_id"] for m in everyone["members"]]
    assert ids == ["ada", "bob", "cy"]  # anon-1 became ada; staff never counts
    ada = everyone["members"][0]
    assert ada["joined_at"].startswith("2026-01-05")  # first seen as the visitor
    assert ada["stages"] == {"awareness": "member", "engagement": "engaged", "advocacy": "champion"}
    assert ada["score"] == 12.5 and ada["advocate"] and ada["activities"] == 7
    assert ada["sources"] == ["discourse", "web"]

    async def ids_of(**params: Any) -> list[str]:
        response = await client.get("/v1/members", params=params)
        assert response.status_code == 200, response.text
        return [m["member_id"] for m in response.json()["members"]]

    assert await ids_of(engagement="engaged") == ["ada"]
    assert await ids_of(customer="true") == ["bob"]
    assert await ids_of(source="github") == ["bob"]
    assert await ids_of(advocate="true") == ["ada"]
    assert await ids_of(q="B") == ["bob"]
    assert await ids_of(score_min=5) == ["ada"]
    assert await ids_of(cohort="newcomer") == ["cy"]  # joined within 30 days of the newest activity
    assert await ids_of(cohort="at_risk") == ["bob"]
    assert await ids_of(cohort="core") == ["ada"]
    assert await ids_of(active_after="2026-02-01T00:00:00Z", sort="-last_active") == ["cy", "bob"]

    # keyset pages: stable while a transition moves a member between the pages
    first = (await client.get("/v1/members", params={"limit": 1, "sort": "-score"})).json()
    assert [m["member_id"] for m in first["members"]] == ["ada"]
    await apply(pool, [moved("cy", "engagement", "engaged", 51, score=99.0)])
    rest = (
        await client.get(
            "/v1/members", params={"limit": 1, "sort": "-score", "cursor": first["next_cursor"]}
        )
    ).json()
    after = (await client.get("/v1/members", params={"sort": "-score"})).json()
    assert [m["member_id"] for m in after["members"]] == ["cy", "ada", "bob"]
    # cy moved ahead of the pages already read: the next page is bob's, and it is the last
    assert [m["member_id"] for m in rest["members"]] == ["bob"]
    assert rest["next_cursor"] is None

    # bad input: a 400 naming the parameter
    for params, name in (
        ({"colour": "red"}, "colour"),
        ({"limit": "501"}, "limit"),
        ({"cursor": "!!not-base64"}, "cursor"),
        ({"cursor": first["next_cursor"], "sort": "joined"}, "cursor"),
        ({"engagement": "sleepy"}, "engagement"),
        ({"active_after": "yesterday"}, "active_after"),
        ({"score_min": "5", "score_max": "1"}, "score_min"),
    ):
        response = await client.get("/v1/members", params=params)
        assert response.status_code == 400, (params, response.text)
        assert f"`{name}`" in response.json()["detail"]

    # the CSV: same query, every row, a header row; Accept: text/csv says the same
    exported = await client.get("/v1/members.csv", params={"sort": "joined"})
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["member_id"] for r in rows] == ["ada", "bob", "cy"]
    assert list(rows[0]) == list(dq.CSV_COLUMNS)
    assert rows[0]["advocacy_stage"] == "champion" and rows[1]["customer"] == "true"
    negotiated = await client.get(
        "/v1/members", params={"sort": "joined"}, headers={"Accept": "text/csv"}
    )
    assert negotiated.text == exported.text

    # many members stream in keyset chunks: every one exactly once
    bulk = [act(activity(f"m-{i:04d}", "signup", day=60 + i / 1000)) for i in range(2500)]
    await apply(pool, bulk)
    big = list(csv.DictReader(io.StringIO((await client.get("/v1/members.csv")).text)))
    assert len(big) == len({r["member_id"] for r in big}) == 2503


async def test_profile_leaderboards_retention_and_erasure(pool: asyncpg.Pool) -> None:
    await community(pool)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app_on(pool)), base_url="http://gw", headers=AUTH
    )
    profile = (await client.get("/v1/members/ada/profile")).json()
    assert [t["to_stage"] for t in profile["timeline"]] == ["member", "engaged", "champion"]
    assert profile["contributions"] == {"reply": 5, "signup": 1, "page_view": 1}
    assert profile["advocacy_evidence"] == {"peer_help": 5}
    assert len(profile["recent_activity"]) == 3  # bounded (recent = 3 in this test)
    assert profile["recent_activity"][0]["kind"] == "reply"
    assert (await client.get("/v1/members/nobody/profile")).status_code == 404

    boards = (await client.get("/v1/leaderboards")).json()
    assert [a["member_id"] for a in boards["advocates"]] == ["ada"]
    assert boards["advocates"][0]["score"] == 20.0 and boards["advocates"][0]["signals"] == 2
    assert boards["champions"][0]["reason"] == "rule fired: champion"
    assert boards["champions"][0]["rank"] == 1

    report = (await client.get("/v1/flywheel")).json()
    retention = {c["cohort"]: c for c in report["cohort_retention"]}
    # January: ada (last active day 6) and bob (day 40); now is day 60
    assert retention["2026-01"]["members"] == 2
    assert retention["2026-01"]["retained"]["1"] == 0.5  # bob was active a week on, ada not
    series = (await client.get("/v1/flywheel/series")).json()
    assert series["health"]["members"] == 3 and series["health"]["customers"] == 1
    weeks = {(w["dimension"], w["stage"]): w["transitions"] for w in series["stage_weeks"]}
    assert weeks[("engagement", "engaged")] == 1

    from services.gateway import member_state

    async with pool.acquire() as conn, conn.transaction():
        await member_state.erase_member_state(conn, {"ada"}, T0)
    assert (await client.get("/v1/members/ada/profile")).status_code == 404
    series = (await client.get("/v1/flywheel/series")).json()
    weeks = {(w["dimension"], w["stage"]): w["transitions"] for w in series["stage_weeks"]}
    assert ("engagement", "engaged") not in weeks


async def test_dashboard_wants_a_login_and_shows_an_empty_state(pool: asyncpg.Pool) -> None:
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app_on(pool)), base_url="http://gw"
    )
    assert (await client.get("/dashboard")).status_code == 303
    assert (
        (await client.get("/dashboard/members.csv"))
        .headers["location"]
        .startswith("/dashboard/login")
    )
    refused = await client.post("/dashboard/login", data={"key": "wrong-key-0000000000"})
    assert refused.status_code == 401
    signed = await client.post(
        "/dashboard/login", data={"key": API_KEY, "next": "https://evil.example/"}
    )
    assert signed.status_code == 303 and signed.headers["location"] == "/dashboard"
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and API_KEY not in cookie
    for path in ("/dashboard", "/dashboard/members", "/dashboard/leaderboards"):
        page = await client.get(path)
        assert page.status_code == 200, (path, page.text)
        assert 'data-empty="true"' in page.text
        assert "Content-Security-Policy" in page.headers
    await community(pool)
    for path in (
        "/dashboard",
        "/dashboard/members",
        "/dashboard/members/ada",
        "/dashboard/leaderboards",
    ):
        page = await client.get(path)
        assert page.status_code == 200, (path, page.text)
    assert (await client.get("/dashboard/static/dashboard.css")).status_code == 200
    assert (await client.get("/dashboard/static/../bootstrap.py")).status_code == 404
    (await client.post("/dashboard/logout"))
    client.cookies.clear()
    assert (await client.get("/dashboard")).status_code == 303


async def test_recent_activities_keep_exactly_each_members_newest(pool: asyncpg.Pool) -> None:
    """The prune keeps, per member, the N newest in the profile's order (occurred_at, then
    activity id, both descending), whatever order the activities arrive in, ties in time
    included; a member with N or fewer keeps all; members not in the batch are not touched."""
    recent = 3
    days = {  # member: activity days, arriving out of order over three batches; ties at 5
        "ada": [5, 1, 5, 9, 2, 5, 0, 7],
        "bob": [3, 1],
        "cy": [4, 4, 4, 4, 4],
    }
    made = {
        m: [activity(m, "post", day=d, activity_id=f"{m}-{i}") for i, d in enumerate(ds)]
        for m, ds in days.items()
    }
    every = [a for m in sorted(made) for a in made[m]]
    for start in range(0, len(every), 6):  # batches of 6
        await apply(pool, [act(a) for a in every[start : start + 6]], recent)
    # a later batch of someone else's leaves the others as they are
    await apply(pool, [act(activity("dee", "post", day=3, activity_id="dee-0"))], recent)

    rows = await pool.fetch(
        "SELECT member_id, activity_id FROM directory_activities ORDER BY member_id, activity_id"
    )
    kept = {(r["member_id"], r["activity_id"]) for r in rows}
    expected = {("dee", "discourse:dee-0")}
    for m, acts in made.items():
        newest = sorted(acts, key=lambda a: (a.occurred_at, f"discourse:{a.activity_id}"))
        expected |= {(m, f"discourse:{a.activity_id}") for a in newest[-recent:]}
    assert kept == expected
    assert len([k for k in kept if k[0] == "bob"]) == 2
