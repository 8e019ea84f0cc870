"""Inbound webhooks in the deployed gateway: real broker, real PostgreSQL.

A delivery sent twice reaches `member-activity` once, as a CloudEvent keyed by the member;
the gateway's database remembers the delivery and the thread's author, across restarts.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest

from services.gateway.bootstrap import build_app
from services.gateway.webhooks import PgWebhookStore
from services.gateway.webhooks.signatures import sign_discourse, sign_github
from shared.cloudevents import derive_event_id
from tests.conftest import Namespace, envelopes, member_of, read_topic
from tests.test_webhooks_api import DISCOURSE_SECRET, GITHUB_SECRET, issue_comment

pytestmark = pytest.mark.integration


@asynccontextmanager
async def gateway(namespace: Namespace, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = namespace.settings(
        database_url,
        clock_tick_interval_s=0,
        github_webhook_secret=GITHUB_SECRET,
        discourse_webhook_secret=DISCOURSE_SECRET,
    )
    app = build_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        yield client


async def post_github(client: httpx.AsyncClient, payload: dict[str, Any], delivery: str) -> Any:
    body = json.dumps(payload).encode()
    return await client.post(
        "/v1/webhooks/github",
        content=body,
        headers={
            "content-type": "application/json",
            "X-GitHub-Event": "issue_comment",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": sign_github(GITHUB_SECRET, body),
        },
    )


async def post_discourse(
    client: httpx.AsyncClient, event: str, payload: dict[str, Any], delivery: str
) -> Any:
    body = json.dumps(payload).encode()
    return await client.post(
        "/v1/webhooks/discourse",
        content=body,
        headers={
            "content-type": "application/json",
            "X-Discourse-Event-Type": next(iter(payload)),
            "X-Discourse-Event": event,
            "X-Discourse-Event-Id": delivery,
            "X-Discourse-Event-Signature": sign_discourse(DISCOURSE_SECRET, body),
        },
    )


TOPIC = {
    "topic": {
        "id": 61,
        "title": "How do I replay a topic?",
        "slug": "replay",
        "created_at": "2026-01-05T09:00:00.000Z",
        "archetype": "regular",
        "user_id": 7,
        "created_by": {"id": 7, "username": "ada"},
    }
}
REPLY = {
    "post": {
        "id": 145,
        "username": "bob",
        "user_id": 8,
        "created_at": "2026-01-05T10:00:00.000Z",
        "post_number": 2,
        "post_type": 1,
        "topic_id": 61,
        "topic_slug": "replay",
        "topic_title": "How do I replay a topic?",
        "raw": "Reset the group.",
        "topic_archetype": "regular",
    }
}


async def test_a_redelivered_webhook_reaches_the_topic_once(namespace: Namespace) -> None:
    url = await namespace.create_database("gateway")
    async with gateway(namespace, url) as client:
        first = await post_github(client, issue_comment(), "72d3162e-0001")
        again = await post_github(client, issue_comment(), "72d3162e-0001")
        assert first.status_code == 202, first.text
        assert again.status_code == 200 and again.json()["status"] == "duplicate"

        assert (await post_discourse(client, "topic_created", TOPIC, "1")).status_code == 202

    # a restarted gateway remembers the delivery and who started the Discourse topic
    async with gateway(namespace, url) as client:
        third = await post_github(client, issue_comment(), "72d3162e-0001")
        assert third.json()["status"] == "duplicate"
        assert (await post_discourse(client, "post_created", REPLY, "2")).status_code == 202

    records = envelopes(await read_topic(namespace, "member-activity", until=3, timeout_s=15))
    comments = [e for e in records if e.data.activity_id == "github:issue_comment:5"]  # type: ignore[attr-defined]
    assert len(comments) == 1, "a redelivery was published again"
    [comment] = comments
    assert comment.key == member_of("github", 12)  # the identity's pseudonym
    assert comment.id == derive_event_id("activity", "github", "github:issue_comment:5")
    [reply] = [e for e in records if e.data.activity_id == "discourse:post:145"]  # type: ignore[attr-defined]
    assert reply.data.target.thread_author_member_id == member_of("discourse", 7)  # type: ignore[attr-defined]

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT source, delivery_id, event, activity_ids FROM webhook_deliveries"
            " ORDER BY source, delivery_id"
        )
        assert [tuple(r) for r in rows] == [
            ("discourse", "1", "topic_created", ["discourse:topic:61"]),
            ("discourse", "2", "post_created", ["discourse:post:145"]),
            ("github", "72d3162e-0001", "issue_comment.created", ["github:issue_comment:5"]),
        ]
    finally:
        await conn.close()


async def test_old_deliveries_are_forgotten(namespace: Namespace) -> None:
    url = await namespace.create_database("gateway")
    async with gateway(namespace, url):  # applies the migrations
        pass
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    try:
        store = PgWebhookStore(lambda: pool, retention_days=3)
        await store.record("github", "old", "star.created", ["github:star:1:2"], {})
        await pool.execute("UPDATE webhook_deliveries SET received_at = now() - interval '4 days'")
        store._pruned_at = -1e9  # due for its hourly prune
        await store.record("github", "new", "star.created", ["github:star:1:3"], {"t": "github:2"})
        assert not await store.seen("github", "old")
        assert await store.seen("github", "new")
        assert await store.thread_authors("github", ["t", "u"]) == {"t": "github:2"}
    finally:
        await pool.close()


async def test_thread_starters_flags_are_remembered_in_either_order(
    namespace: Namespace,
) -> None:
    """Discourse's first post (the staff flag) may come before or after topic_created (the
    thread's author); a flag once known is not unset by a delivery that does not say."""
    from services.gateway.webhooks.mapping import ThreadStarter

    url = await namespace.create_database("gateway")
    async with gateway(namespace, url):  # applies the migrations
        pass
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    try:
        store = PgWebhookStore(lambda: pool)
        await store.remember_starters("discourse", {"t-1": ThreadStarter("discourse:7", True)})
        await store.record("discourse", "d-1", "topic_created", ["x"], {"t-1": "discourse:7"})
        await store.record("discourse", "d-2", "topic_created", ["y"], {"t-2": "discourse:8"})
        await store.remember_starters("discourse", {"t-2": ThreadStarter("discourse:8", False)})
        await store.remember_starters("discourse", {"t-1": ThreadStarter("discourse:7", None)})
        await store.remember_starters(
            "discourse", {"t-2": ThreadStarter("discourse:8", is_question=True)}
        )
        assert await store.starters("discourse", ["t-1", "t-2", "t-3"]) == {
            "t-1": ThreadStarter("discourse:7", True, None),
            "t-2": ThreadStarter("discourse:8", False, True),
        }
        assert await store.thread_authors("discourse", ["t-1", "t-2"]) == {
            "t-1": "discourse:7",
            "t-2": "discourse:8",
        }
    finally:
        await pool.close()
