"""The platform webhooks through the identity resolver, on the real broker and PostgreSQL: one
person on Discourse and Slack with the same verified email is one member; once erased, their
deliveries are acknowledged and not published."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from services.gateway.bootstrap import build_app
from services.gateway.webhooks.signatures import sign_discourse, sign_slack
from shared.contracts import ActivityV1
from tests.conftest import Namespace, envelopes, member_of
from tests.test_erasure import read_all
from tests.test_identity_integration import IN_PROCESS_GRACE_S

pytestmark = pytest.mark.integration

API_KEY = "identity-webhook-tests-key"
DISCOURSE_SECRET = "discourse-identity-secret"
SLACK_SECRET = "slack-identity-signing-secret"


@pytest.fixture
async def gateway(namespace: Namespace) -> AsyncIterator[httpx.AsyncClient]:
    settings = namespace.settings(
        await namespace.create_database("gateway"),
        clock_tick_interval_s=0,
        api_keys=f"tests={API_KEY}:ingest,read,admin",
        discourse_webhook_secret=DISCOURSE_SECRET,
        slack_signing_secret=SLACK_SECRET,
        shutdown_grace_s=IN_PROCESS_GRACE_S,
    )
    app = build_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gateway",
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as client,
    ):
        yield client


async def discourse_user(client: httpx.AsyncClient, uid: int, email: str) -> httpx.Response:
    body = json.dumps(
        {
            "user": {
                "id": uid,
                "username": f"user{uid}",
                "email": email,
                "active": True,  # Discourse activates an account once its email is confirmed
                "created_at": "2026-01-05T09:00:00Z",
            }
        }
    ).encode()
    return await client.post(
        "/v1/webhooks/discourse",
        content=body,
        headers={
            "content-type": "application/json",
            "X-Discourse-Instance": "https://forum.example.org",
            "X-Discourse-Event-Id": f"user-{uid}",
            "X-Discourse-Event-Type": "user",
            "X-Discourse-Event": "user_created",
            "X-Discourse-Event-Signature": sign_discourse(DISCOURSE_SECRET, body),
        },
    )


async def slack(client: httpx.AsyncClient, event_id: str, event: dict[str, Any]) -> httpx.Response:
    body = json.dumps(
        {
            "type": "event_callback",
            "team_id": "T0TEAM",
            "event_id": event_id,
            "event_time": 1767607200,
            "event": event,
        }
    ).encode()
    ts = int(datetime.now(UTC).timestamp())
    return await client.post(
        "/v1/webhooks/slack",
        content=body,
        headers={
            "content-type": "application/json",
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": sign_slack(SLACK_SECRET, body, ts),
        },
    )


def message(user: str, ts: str) -> dict[str, Any]:
    return {
        "type": "message",
        "channel": "C01",
        "user": user,
        "text": "How do I replay a topic?",
        "ts": ts,
        "event_ts": ts,
        "channel_type": "channel",
    }


async def test_a_verified_email_makes_two_platforms_one_member_and_erasure_blocks_both(
    namespace: Namespace, gateway: httpx.AsyncClient
) -> None:
    assert (await discourse_user(gateway, 31, "cy@example.com")).status_code == 202
    joined = await slack(
        gateway,
        "Ev31",
        {
            "type": "team_join",
            "event_ts": "1767607200.000100",
            "user": {
                "id": "U31",
                "name": "cy",
                "is_email_confirmed": True,
                "profile": {"email": "Cy@Example.com"},
            },
        },
    )
    assert joined.status_code == 202, joined.text
    posted = await slack(gateway, "Ev32", message("U31", "1767607300.000100"))
    assert posted.status_code == 202, posted.text

    records = envelopes(await read_all(namespace, "member-activity"))
    published = [e.data for e in records if isinstance(e.data, ActivityV1)]
    assert len(published) == len(records)
    cy = member_of("discourse", 31)  # the pseudonym of the identity seen first
    assert [(a.source, a.kind, a.actor.member_id) for a in published] == [
        ("discourse", "signup", cy),
        ("slack", "signup", cy),  # the same verified email: the same person
        ("slack", "post", cy),
    ]
    thread = published[2].target
    assert thread is not None and thread.thread_author_member_id == cy
    identities = (await gateway.get(f"/v1/members/{cy}/identities")).json()
    assert [(i["platform"], i["platform_user_id"]) for i in identities["identities"]] == [
        ("discourse", "31"),
        ("slack", "U31"),
    ]

    erased = await gateway.delete(f"/v1/members/{cy}")
    assert erased.status_code == 202 and erased.json()["identities_blocked"] == 3
    # the person writes again on Slack: acknowledged, not published
    again = await slack(gateway, "Ev33", message("U31", "1767607400.000100"))
    assert again.status_code == 202, again.text
    # a new Discourse account with the erased person's verified email: not linked, not published
    assert (await discourse_user(gateway, 99, "cy@example.com")).status_code == 202
    assert len(await read_all(namespace, "member-activity")) == len(records)
    assert (await gateway.get(f"/v1/members/{member_of('discourse', 99)}/identities")).json()[
        "identities"
    ] == []
