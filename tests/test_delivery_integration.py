"""Outbound webhooks against a real HTTP receiver on 127.0.0.1 and a real PostgreSQL (and, end
to end, the real broker): what arrives, signed how, in which order, after which failures."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from cryptography.fernet import Fernet
from fastapi import FastAPI
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.gateway.bootstrap import create_app
from services.gateway.delivery import fanout, store
from services.gateway.delivery.routes import router
from services.gateway.delivery.sender import AttemptReport, Sender
from services.gateway.delivery.signing import generate_secret
from services.gateway.delivery.targets import TargetPolicy
from services.gateway.delivery.vault import SecretVault
from services.gateway.journey.models import MemberJourney, StageCounts
from shared.cloudevents import OutgoingRecord, decode, derive_event_id, encode
from shared.contracts import EVENT_TYPES, PEER_HELP, STAGE_CHANGED, PeerHelpV1, StageChangedV1
from shared.postgres import PLUMBING_MIGRATIONS, migrate
from shared.settings import Settings
from shared.uow import unit_of_work
from tests.conftest import Namespace, publish

pytestmark = pytest.mark.integration

GATEWAY_MIGRATIONS = Path(__file__).resolve().parents[1] / "services" / "gateway" / "migrations"
ADMIN_KEY = "admin-key-0123456789abcdef"
READ_KEY = "read-key-0123456789abcdef"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECRETS_KEY = Fernet.generate_key().decode()

FAST: dict[str, Any] = {
    "webhook_retry_initial_s": 0.02,
    "webhook_retry_max_s": 0.1,
    "webhook_timeout_s": 0.5,
    "webhook_poll_interval_s": 0.05,
    "webhook_give_up_after_s": 60.0,
    "webhook_max_in_flight": 8,
    "transient_retry_initial_s": 0.05,
    "api_keys": f"admin={ADMIN_KEY}:admin;reader={READ_KEY}:read",
    # the receivers here are local: allow-listed, plain http (production: public https only)
    "webhook_allow_hosts": "127.0.0.1",
    "webhook_allow_http": True,
    "secrets_keys": SECRETS_KEY,
}


# ---- a real receiver ------------------------------------------------------------------------


@dataclass
class Arrival:
    webhook_id: str
    subject: str
    body: bytes
    headers: dict[str, str]
    answer: int  # what the receiver answered (possibly after the sender gave up waiting)


Decide = Callable[[int, str], str]
"""(arrival number from 0, webhook-id) -> "ok", "fail" (500) or "slow" (answers after the
sender's timeout)."""


@dataclass
class Receiver:
    decide: Decide = lambda _n, _id: "ok"
    slow_s: float = 1.0
    answer_body: str = "boom"  # what a failing receiver answers
    arrivals: list[Arrival] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        n = len(self.arrivals)
        webhook_id = headers.get("webhook-id", "")
        verdict = self.decide(n, webhook_id)
        answer = 500 if verdict == "fail" else 204
        arrival = Arrival(webhook_id, json.loads(body).get("subject", ""), body, headers, answer)
        self.arrivals.append(arrival)
        if verdict == "slow":
            await asyncio.sleep(self.slow_s)
        return Response(self.answer_body if answer == 500 else None, status_code=answer)

    def ids(self) -> list[str]:
        return [a.webhook_id for a in self.arrivals]


@asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = Starlette(routes=[Route("/hook", receiver.handle, methods=["POST"])])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    receiver.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task


# ---- database, queue and sender --------------------------------------------------------------


@pytest.fixture
async def pool(namespace: Namespace) -> AsyncIterator[asyncpg.Pool]:
    url = await namespace.create_database("gateway")
    created = await asyncpg.create_pool(url, min_size=1, max_size=6)
    assert created is not None
    await migrate(created, [PLUMBING_MIGRATIONS, GATEWAY_MIGRATIONS])
    try:
        yield created
    finally:
        await created.close()


def settings(**overrides: Any) -> Settings:
    return Settings(**(FAST | overrides))


def transition(member: str, n: int) -> OutgoingRecord:
    data = StageChangedV1(
        member_id=member,
        dimension="engagement",
        from_stage=None if n == 0 else f"s{n - 1}",
        to_stage=f"s{n}",
        reason=f"step {n}",
        score=float(n),
        occurred_at=T0 + timedelta(minutes=n),
        caused_by=[f"a-{member}-{n}"],
    )
    return encode(
        STAGE_CHANGED,
        data,
        event_id=derive_event_id(STAGE_CHANGED.type, member, str(n)),
        source="/engagement",
    )


async def queue(pool: asyncpg.Pool, records: Sequence[OutgoingRecord]) -> None:
    """What the fan-out does with a batch read from Kafka."""
    envelopes = [
        decode(topic=r.topic, partition=0, offset=i, key=r.key, value=r.value, headers=r.headers)
        for i, r in enumerate(records)
    ]
    async with unit_of_work(pool) as uow:
        await fanout.handle_batch(uow, envelopes)


async def subscribe(
    pool: asyncpg.Pool,
    url: str,
    secret: str,
    event_types: Sequence[str] = ("journey.stage_changed.v1",),
) -> str:
    async with pool.acquire() as conn:
        row = await store.create_subscription(
            conn, url=url, event_types=list(event_types), secret=secret, description=None
        )
    return row.id


@asynccontextmanager
async def sending(
    pool: asyncpg.Pool, config: Settings, reports: list[AttemptReport] | None = None
) -> AsyncIterator[Sender]:
    sender = Sender(pool, config, observer=(reports if reports is not None else []).append)
    sender.start()
    try:
        yield sender
    finally:
        await sender.stop(timeout_s=2)


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def statuses(pool: asyncpg.Pool) -> dict[str, str]:
    rows = await pool.fetch("SELECT event_id, status FROM outbound_deliveries")
    return {r["event_id"]: r["status"] for r in rows}


async def all_finished(pool: asyncpg.Pool, count: int, status: str = "delivered") -> bool:
    found = await statuses(pool)
    return len(found) == count and set(found.values()) == {status}


def verified(arrival: Arrival, secret: str) -> dict[str, Any]:
    """The Standard Webhooks reference verifier's view of one arrival."""
    result: dict[str, Any] = Webhook(secret).verify(arrival.body, arrival.headers)
    return result


# ---- the sender -------------------------------------------------------------------------------


async def test_a_delivery_arrives_signed_as_a_structured_cloudevent(pool: asyncpg.Pool) -> None:
    secret = generate_secret()
    reports: list[AttemptReport] = []
    record = transition("ada", 0)
    async with receiving(Receiver()) as receiver:
        subscription = await subscribe(pool, receiver.url, secret)
        await queue(pool, [record])
        async with sending(pool, settings(), reports):
            await wait_for(lambda: all_finished(pool, 1), what="the delivery")

    [arrival] = receiver.arrivals
    assert arrival.headers["content-type"] == "application/cloudevents+json"
    assert arrival.headers["webhook-id"] == record.event_id
    assert abs(int(arrival.headers["webhook-timestamp"]) - time.time()) < 30
    event = verified(arrival, secret)
    assert event == {
        "specversion": "1.0",
        "id": record.event_id,
        "source": "/engagement",
        "type": "journey.stage_changed.v1",
        "time": "2026-03-02T09:00:00+00:00",
        "subject": "ada",
        "datacontenttype": "application/json",
        "data": json.loads(record.value),
    }
    async with pool.acquire() as conn:
        [logged] = await store.list_deliveries(
            conn, subscription, status="delivered", before_id=None, limit=10
        )
    assert logged.attempts == 1
    [attempt] = logged.attempt_log
    assert (attempt.status_code, attempt.outcome, attempt.error) == (204, "delivered", None)
    assert attempt.latency_ms > 0
    assert [(r.outcome, r.status_code, r.subscription_id) for r in reports] == [
        ("delivered", 204, subscription)
    ]


async def test_a_flaky_receiver_gets_everything_in_member_order(pool: asyncpg.Pool) -> None:
    """500s, then timeouts, then recovery; two senders share the queue like two replicas."""
    members = ["ada", "bob", "cy"]
    per_member = 5
    records = [transition(m, n) for n in range(per_member) for m in members]
    expected = {m: [transition(m, n).event_id for n in range(per_member)] for m in members}

    def decide(n: int, _id: str) -> str:
        if n < 8:
            return "fail"
        if n < 20 and n % 3 == 0:
            return "slow"
        return "ok"

    secret = generate_secret()
    reports: list[AttemptReport] = []
    config = settings(webhook_timeout_s=0.3)
    async with receiving(Receiver(decide, slow_s=0.6)) as receiver:
        await subscribe(pool, receiver.url, secret)
        await queue(pool, records[:6])
        async with sending(pool, config, reports), sending(pool, config, reports):
            await queue(pool, records[6:])
            await wait_for(lambda: all_finished(pool, len(records)), what="every delivery")

    arrivals = receiver.arrivals
    assert any(a.answer == 500 for a in arrivals) and len(arrivals) > len(records)
    assert {a.webhook_id for a in arrivals} == {r.event_id for r in records}
    by_id: dict[str, Arrival] = {}
    for arrival in arrivals:
        # a duplicate is only ever a retry: the very same message, freshly signed
        first = by_id.setdefault(arrival.webhook_id, arrival)
        assert arrival.body == first.body
        assert verified(arrival, secret)["id"] == arrival.webhook_id
    for member, ids in expected.items():
        seen = [a.webhook_id for a in arrivals if a.subject == member]
        assert list(dict.fromkeys(seen)) == ids, f"{member}'s events out of order"
        # the next event waits for the previous one: no retry of k once k+1 was sent
        for k in range(len(ids) - 1):
            last_k = max(i for i, x in enumerate(seen) if x == ids[k])
            first_next = seen.index(ids[k + 1])
            assert last_k < first_next, f"{member}: {ids[k + 1]} sent before {ids[k]} was done"
    attempts = await pool.fetchval("SELECT count(*) FROM outbound_delivery_attempts")
    assert attempts == len(arrivals) == len(reports)
    assert {r.outcome for r in reports} == {"delivered", "retrying"}


async def test_a_delivery_that_keeps_failing_dies_and_a_replay_delivers_it(
    pool: asyncpg.Pool, namespace: Namespace
) -> None:
    doomed, after = transition("ada", 0), transition("ada", 1)
    broken = {"on": True}

    def decide(_n: int, webhook_id: str) -> str:
        return "fail" if broken["on"] and webhook_id == doomed.event_id else "ok"

    secret = generate_secret()
    # give-up time, not a count: long enough for several attempts (back-off 20-100 ms) on a
    # loaded machine too, where 0.5 s once left room for one attempt only
    config = settings(webhook_give_up_after_s=2.0)
    app = _api_app(config, pool, lambda: None)
    async with (
        receiving(Receiver(decide)) as receiver,
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw") as api,
    ):
        created = await api.post(
            "/v1/subscriptions",
            headers=ADMIN,
            json={
                "url": receiver.url,
                "event_types": ["journey.stage_changed.v1"],
                "secret": secret,
            },
        )
        assert created.status_code == 201, created.text
        subscription = created.json()["id"]
        await queue(pool, [doomed, after])
        async with sending(pool, config) as sender:
            await wait_for(
                lambda: _is(pool, {doomed.event_id: "dead", after.event_id: "delivered"}),
                what="the first to die, the second to pass",
            )
            ids = receiver.ids()
            assert ids.count(doomed.event_id) >= 2
            assert ids.index(after.event_id) > max(
                i for i, x in enumerate(ids) if x == doomed.event_id
            ), "the member's next delivery waited until the first was dead"

            dead = await api.get(
                f"/v1/subscriptions/{subscription}/deliveries",
                params={"status": "dead"},
                headers=ADMIN,
            )
            assert dead.status_code == 200
            [entry] = dead.json()["deliveries"]
            assert entry["event_id"] == doomed.event_id
            assert entry["last_status_code"] == 500
            assert entry["attempts"] == len(entry["attempt_log"]) >= 2
            assert entry["attempt_log"][-1]["outcome"] == "dead"
            assert {a["outcome"] for a in entry["attempt_log"][:-1]} == {"failed"}
            assert entry["attempt_log"][0]["error"].startswith("HTTP 500")

            broken["on"] = False
            app.state.wake = sender.wake
            replayed = await api.post(f"/v1/deliveries/{entry['id']}/replay", headers=ADMIN)
            assert replayed.status_code == 202
            assert replayed.json()["status"] == "pending"
            await wait_for(lambda: all_finished(pool, 2), what="the replayed delivery")
            assert receiver.ids()[-1] == doomed.event_id
            assert verified(receiver.arrivals[-1], secret)["id"] == doomed.event_id

            # a time range goes again, in each member's order
            before = len(receiver.arrivals)
            now = datetime.now(UTC)
            window = {
                "since": (now - timedelta(hours=1)).isoformat(),
                "until": (now + timedelta(minutes=1)).isoformat(),
            }
            again = await api.post(
                f"/v1/subscriptions/{subscription}/replay", headers=ADMIN, json=window
            )
            assert again.json() == {"replayed": 2}
            await wait_for(lambda: all_finished(pool, 2), what="the replayed range")
            assert receiver.ids()[before:] == [doomed.event_id, after.event_id]


async def _is(pool: asyncpg.Pool, wanted: dict[str, str]) -> bool:
    return await statuses(pool) == wanted


async def test_deleting_a_subscription_stops_its_deliveries(pool: asyncpg.Pool) -> None:
    async with receiving(Receiver(lambda _n, _id: "fail")) as receiver:
        subscription = await subscribe(pool, receiver.url, generate_secret())
        await queue(pool, [transition("ada", 0), transition("ada", 1)])
        async with sending(pool, settings()):
            await wait_for(lambda: _arrived(receiver, 2), what="a few failed attempts")
            async with pool.acquire() as conn:
                assert await store.delete_subscription(conn, subscription)
            await asyncio.sleep(0.3)  # an attempt in flight may still land
            count = len(receiver.arrivals)
            await asyncio.sleep(0.5)
            assert len(receiver.arrivals) == count
    assert await pool.fetchval("SELECT count(*) FROM outbound_deliveries") == 0
    assert await pool.fetchval("SELECT count(*) FROM outbound_delivery_attempts") == 0


async def _arrived(receiver: Receiver, count: int) -> bool:
    return len(receiver.arrivals) >= count


async def test_fan_out_queues_each_event_once_per_matching_subscription(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        wants = await store.create_subscription(
            conn,
            url="http://127.0.0.1:9/a",
            event_types=["journey.stage_changed.v1", "signal.advocate.v1"],
            secret=generate_secret(),
            description=None,
        )
        await store.create_subscription(
            conn,
            url="http://127.0.0.1:9/b",
            event_types=["signal.peer_help.v1"],
            secret=generate_secret(),
            description=None,
        )
    records = [transition("ada", 0), transition("bob", 0), transition("ada", 1)]
    await queue(pool, records)
    await queue(pool, records)  # a redelivered batch: nothing new
    rows = await pool.fetch(
        "SELECT subscription_id, event_id, member_key FROM outbound_deliveries ORDER BY id"
    )
    assert [(r["subscription_id"], r["event_id"], r["member_key"]) for r in rows] == [
        (wants.id, r.event_id, r.key.decode()) for r in records
    ]


async def test_fan_out_builds_no_body_for_events_nobody_subscribed_to(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    real = fanout.structured_body

    def counting(envelope: Any) -> str:
        built.append(envelope.id)
        return real(envelope)

    monkeypatch.setattr(fanout, "structured_body", counting)
    await queue(pool, [transition("ada", 0)])  # no subscription at all
    other = await subscribe(
        pool, "http://127.0.0.1:9/a", generate_secret(), event_types=["signal.peer_help.v1"]
    )
    await queue(pool, [transition("bob", 0)])  # a subscription, not for transitions
    assert built == []
    assert await pool.fetchval("SELECT count(*) FROM outbound_deliveries") == 0
    async with pool.acquire() as conn:
        await store.delete_subscription(conn, other)
    wants = await subscribe(pool, "http://127.0.0.1:9/b", generate_secret())
    record = transition("cyd", 0)
    await queue(pool, [record])  # now someone wants them: queued, from then on
    assert built == [record.event_id]
    rows = await pool.fetch("SELECT subscription_id, event_id FROM outbound_deliveries")
    assert [(r["subscription_id"], r["event_id"]) for r in rows] == [(wants, record.event_id)]


# ---- the API ----------------------------------------------------------------------------------


class _NoPublisher:
    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        raise AssertionError("not used")


class _NoJourney:
    async def member_journey(self, member_id: str) -> MemberJourney | None:
        return None

    async def stage_counts(self) -> StageCounts:
        return StageCounts(members=0, dimensions={})


async def _ready() -> dict[str, str]:
    return {}


def _api_app(config: Settings, pool: asyncpg.Pool, wake: Callable[[], None]) -> FastAPI:
    """The gateway's own app (problem documents, API keys) with the subscriptions router."""
    app = create_app(
        publisher=_NoPublisher(), journey=_NoJourney(), readiness=_ready, settings=config
    )
    app.state.wake = wake
    app.include_router(
        router(
            lambda: pool,
            wake_sender=lambda: app.state.wake(),
            policy=TargetPolicy.from_settings(config),
            vault=SecretVault.from_settings(config),
        )
    )
    return app


async def test_subscriptions_api(pool: asyncpg.Pool) -> None:
    app = _api_app(settings(), pool, lambda: None)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as api:
        body = {
            "url": "https://crm.example.com/hooks/flywheel",
            "event_types": ["signal.advocate.v1", "signal.champion_nominated.v1"],
            "description": "CRM",
        }
        # admin only
        assert (await api.post("/v1/subscriptions", json=body)).status_code == 401
        as_reader = await api.post("/v1/subscriptions", json=body, headers={"x-api-key": READ_KEY})
        assert as_reader.status_code == 403
        assert as_reader.headers["content-type"] == "application/problem+json"
        assert (
            await api.get("/v1/subscriptions", headers={"x-api-key": READ_KEY})
        ).status_code == 403

        created = await api.post("/v1/subscriptions", json=body, headers=ADMIN)
        assert created.status_code == 201, created.text
        first = created.json()
        assert first["secret"].startswith("whsec_")
        assert first["event_types"] == body["event_types"]
        assert first["url"] == body["url"]
        own_secret = generate_secret()
        second = (
            await api.post(
                "/v1/subscriptions",
                json={
                    "url": "http://127.0.0.1:9/x",
                    "event_types": ["signal.peer_help.v1"],
                    "secret": own_secret,
                },
                headers=ADMIN,
            )
        ).json()
        assert second["secret"] == own_secret

        listed = (await api.get("/v1/subscriptions", headers=ADMIN)).json()["subscriptions"]
        assert [s["id"] for s in listed] == [first["id"], second["id"]]
        assert all("secret" not in s for s in listed)
        one = (await api.get(f"/v1/subscriptions/{first['id']}", headers=ADMIN)).json()
        assert one["description"] == "CRM" and "secret" not in one

        bad = await api.post(
            "/v1/subscriptions",
            json={
                "url": "https://x.test",
                "event_types": ["community.activity.v1"],
                "secret": "s3cret",
            },
            headers=ADMIN,
        )
        assert bad.status_code == 422
        assert bad.headers["content-type"] == "application/problem+json"
        pointers = {e["pointer"] for e in bad.json()["errors"]}
        assert pointers == {"/event_types/0", "/secret"}

        empty = await api.get(f"/v1/subscriptions/{first['id']}/deliveries", headers=ADMIN)
        assert empty.json() == {"deliveries": [], "next_before": None}
        wrong = await api.get(
            f"/v1/subscriptions/{first['id']}/deliveries", params={"status": "lost"}, headers=ADMIN
        )
        assert wrong.status_code == 422
        window = await api.post(
            f"/v1/subscriptions/{first['id']}/replay",
            json={"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            headers=ADMIN,
        )
        assert window.status_code == 422
        assert window.json()["type"].endswith("invalid-replay-window")

        assert (await api.post("/v1/deliveries/999/replay", headers=ADMIN)).status_code == 404
        assert (
            await api.delete(f"/v1/subscriptions/{first['id']}", headers=ADMIN)
        ).status_code == 204
        gone = await api.delete(f"/v1/subscriptions/{first['id']}", headers=ADMIN)
        assert gone.status_code == 404
        assert gone.json()["type"].endswith("subscription-not-found")
        missing = await api.get(f"/v1/subscriptions/{first['id']}/deliveries", headers=ADMIN)
        assert missing.status_code == 404
        remaining = (await api.get("/v1/subscriptions", headers=ADMIN)).json()["subscriptions"]
        assert [s["id"] for s in remaining] == [second["id"]]


async def test_deliveries_are_paged_newest_first(pool: asyncpg.Pool) -> None:
    app = _api_app(settings(), pool, lambda: None)
    subscription = await subscribe(pool, "http://127.0.0.1:9/none", generate_secret())
    await queue(pool, [transition("ada", n) for n in range(5)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw") as api:
        url = f"/v1/subscriptions/{subscription}/deliveries"
        page = (await api.get(url, params={"limit": 3}, headers=ADMIN)).json()
        assert [d["subject"] for d in page["deliveries"]] == ["ada"] * 3
        assert [d["status"] for d in page["deliveries"]] == ["pending"] * 3
        rest = (
            await api.get(url, params={"limit": 3, "before": page["next_before"]}, headers=ADMIN)
        ).json()
        ids = [d["id"] for d in page["deliveries"] + rest["deliveries"]]
        assert ids == sorted(ids, reverse=True) and len(ids) == 5
        assert rest["next_before"] is None


# ---- end to end: the broker, the gateway process's wiring, a receiver -------------------------


async def test_a_transition_on_kafka_becomes_a_webhook(namespace: Namespace) -> None:
    from services.gateway.bootstrap import build_app

    url = await namespace.create_database("gateway")
    config = namespace.settings(url, clock_tick_interval_s=0, **FAST)
    app = build_app(config)
    secret = generate_secret()
    record = transition("ada", 0)
    async with (
        receiving(Receiver()) as receiver,
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw") as api,
    ):
        created = await api.post(
            "/v1/subscriptions",
            headers=ADMIN,
            json={
                "url": receiver.url,
                "event_types": ["journey.stage_changed.v1"],
                "secret": secret,
            },
        )
        assert created.status_code == 201, created.text
        await publish(namespace, [record])
        await wait_for(lambda: _arrived(receiver, 1), timeout_s=60, what="the webhook")

        # the read model gets the same event: each consumer group keeps its own inbox
        async def projected() -> bool:
            journey = await api.get(
                "/v1/members/ada/journey", headers={"authorization": f"Bearer {READ_KEY}"}
            )
            return journey.status_code == 200

        await wait_for(projected, timeout_s=30, what="the read model")
    _disarm_shutdown_watchdogs()
    [arrival] = receiver.arrivals
    event = verified(arrival, secret)
    assert (event["id"], event["type"], event["subject"]) == (
        record.event_id,
        "journey.stage_changed.v1",
        "ada",
    )
    assert event["data"] == json.loads(record.value)
    conn = await asyncpg.connect(url)
    try:
        for inbox in ("inbox", "outbound_fanout.inbox"):  # the read model's, the fan-out's
            ids = await conn.fetchval(f"SELECT array_agg(event_id) FROM {inbox}")
            assert ids == [record.event_id], inbox
    finally:
        await conn.close()


def _disarm_shutdown_watchdogs() -> None:
    """The gateway's lifespan calls ConsumingService.on_shutdown_signal, which arms a watchdog
    that ends the process when the shutdown grace is over; it is not disarmed after a clean
    stop, so in-process it would end the test session. No-op once shared/service.py cancels it."""
    for thread in threading.enumerate():
        function = getattr(thread, "function", None)
        if isinstance(thread, threading.Timer) and "_shutdown_overdue" in repr(function):
            thread.cancel()


# ---- the receiver of docs/INTEGRATING.md ------------------------------------------------------


def _documented_receiver() -> dict[str, Any]:
    """The receiver's code block of docs/INTEGRATING.md, loaded as a module would be."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "INTEGRATING.md").read_text()
    start = text.index('```python\n"""receiver.py') + len("```python\n")
    code = text[start : text.index("```", start)]
    namespace: dict[str, Any] = {"__name__": "receiver"}
    exec(compile(code, "INTEGRATING.md:receiver.py", "exec"), namespace)
    return namespace


async def test_the_documented_receiver_verifies_and_drops_duplicates(pool: asyncpg.Pool) -> None:
    from http.server import ThreadingHTTPServer

    receiver = _documented_receiver()
    secret = generate_secret()
    handled: list[dict[str, Any]] = []
    receiver["SECRET"] = secret
    receiver["handle"] = handled.append
    server = ThreadingHTTPServer(("127.0.0.1", 0), receiver["Receiver"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    try:
        async with httpx.AsyncClient() as client:
            forged = await client.post(
                url,
                content=b'{"id": "x"}',
                headers={
                    "webhook-id": "x",
                    "webhook-timestamp": str(int(time.time())),
                    "webhook-signature": "v1,bm90IGEgc2lnbmF0dXJl",
                },
            )
        assert forged.status_code == 401
        subscription = await subscribe(pool, url, secret)
        records = [transition("ada", 0), transition("ada", 1)]
        await queue(pool, records)
        async with sending(pool, settings()):
            await wait_for(lambda: all_finished(pool, 2), what="the deliveries")
            async with pool.acquire() as conn:
                assert (
                    await store.replay_range(
                        conn,
                        subscription,
                        since=datetime.now(UTC) - timedelta(hours=1),
                        until=datetime.now(UTC) + timedelta(hours=1),
                        status=None,
                    )
                    == 2
                )
            await wait_for(lambda: all_finished(pool, 2), what="the replays")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert [e["id"] for e in handled] == [r.event_id for r in records]
    assert handled[0]["data"] == json.loads(records[0].value)
    assert receiver["seen"] == {r.event_id for r in records}


# ---- erasure and retention --------------------------------------------------------------------


@pytest.mark.skipif("member.erased.v1" not in EVENT_TYPES, reason="no erasure event yet")
async def test_an_erasure_forgets_every_queued_delivery_about_the_member(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await store.create_subscription(
            conn,
            url="http://127.0.0.1:9/crm",
            event_types=["journey.stage_changed.v1", "signal.peer_help.v1", "member.erased.v1"],
            secret=generate_secret(),
            description=None,
        )
    helped_ada = PeerHelpV1(
        helper_member_id="bob",
        helped_member_id="ada",
        thread_id="t-1",
        url=None,
        accepted=True,
        occurred_at=T0,
        activity_id="discourse:r-1",
    )
    erased = EVENT_TYPES["member.erased.v1"]
    notice = encode(
        erased,
        erased.model.model_validate({"member_id": "ada", "occurred_at": T0}),
        event_id="erase-ada",
        source="/gateway",
    )
    bob = transition("bob", 0)
    await queue(pool, [transition("ada", 0), bob])
    await queue(
        pool,
        [encode(PEER_HELP, helped_ada, event_id="help-1", source="/engagement"), notice],
    )
    left = await pool.fetch("SELECT event_id, member_key FROM outbound_deliveries ORDER BY id")
    assert [(r["event_id"], r["member_key"]) for r in left] == [
        (bob.event_id, "bob"),
        ("erase-ada", "ada"),
    ]


async def test_finished_deliveries_are_pruned_after_the_retention(pool: asyncpg.Pool) -> None:
    await subscribe(pool, "http://127.0.0.1:9/none", generate_secret())
    await queue(pool, [transition("ada", n) for n in range(3)])
    await pool.execute(
        "UPDATE outbound_deliveries SET status = 'delivered', finished_at = now() - $2::interval"
        " WHERE id = (SELECT min(id) FROM outbound_deliveries) + $1",
        0,
        timedelta(days=31),
    )
    await pool.execute(
        "UPDATE outbound_deliveries SET status = 'dead', finished_at = now() - $2::interval"
        " WHERE id = (SELECT min(id) FROM outbound_deliveries) + $1",
        1,
        timedelta(days=29),
    )
    sender = Sender(pool, settings(webhook_log_retention_days=30))
    assert await sender.prune() == 1
    assert sorted(await pool.fetchval("SELECT array_agg(status) FROM outbound_deliveries")) == [
        "dead",
        "pending",
    ]
