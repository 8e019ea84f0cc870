"""Erasure reaches the log, on the real broker and PostgreSQL: after `DELETE /v1/members/{id}`,
no retained topic holds the person's email, handles or platform user ids, in any key, header
or value (docs/SECURITY.md, "Erasure and the log").

The person, Dora, lives the way a real one does: she joins Slack with a confirmed email and
signs up on the forum with the same one (one member), asks there and on Slack, reacts, invites
someone into a channel, and her GitHub account, linked by an operator, comments, stars and
forks. Others reply in her threads, so their activities name her too. A CRM-like client also
posts an activity of hers with her handle and email in the actor. The three stage services
and the gateway run, so transitions, signals and dead letters exist; then she is erased, and
every record of every topic is read from the beginning.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from services.advocacy.__main__ import SPEC as ADVOCACY
from services.awareness.__main__ import SPEC as AWARENESS
from services.engagement.__main__ import SPEC as ENGAGEMENT
from services.gateway.bootstrap import build_app
from services.gateway.identity.pseudonyms import PseudonymKeyError
from services.gateway.webhooks.signatures import sign_discourse, sign_github
from shared.topics import ALL_TOPICS
from tests.conftest import Namespace, member_of, running
from tests.test_erasure import read_all
from tests.test_identity_integration import IN_PROCESS_GRACE_S, eventually
from tests.test_identity_webhooks import DISCOURSE_SECRET, SLACK_SECRET, slack


async def _slack(client: httpx.AsyncClient, event_id: str, event: dict[str, Any]) -> None:
    response = await slack(client, event_id, event)
    assert response.status_code == 202, response.text


pytestmark = pytest.mark.integration

KEY = "erasure-log-tests-key-9f3kq"
GITHUB_SECRET = "gh-erasure-log-secret-9d8f7a6s5d4f"

SLACK_ID, FORUM_ID, GITHUB_ID = "U0DORA77", 8675309, 4815162342
EMAIL = "Dora.Marquez77@example.org"
HANDLES = ("dora_the_explorer", "dora77forum", "dora-gh-77")
KIM = "U0KIM55"
QUESTION = "ZEBRAFISH how do I reset a consumer group?"  # her own words: they stay
NEEDLES = (SLACK_ID, str(FORUM_ID), str(GITHUB_ID), EMAIL.lower(), *HANDLES)
"""What must not be readable anywhere in the log once she is erased (lower case)."""

REPO = {
    "id": 186853002,
    "full_name": "octo/flywheel",
    "html_url": "https://github.com/octo/flywheel",
}


@pytest.fixture
async def gateway(namespace: Namespace) -> AsyncIterator[httpx.AsyncClient]:
    settings = namespace.settings(
        await namespace.create_database("gateway"),
        clock_tick_interval_s=0,
        api_keys=f"tests={KEY}:ingest,read,admin",
        github_webhook_secret=GITHUB_SECRET,
        discourse_webhook_secret=DISCOURSE_SECRET,
        slack_signing_secret=SLACK_SECRET,
        shutdown_grace_s=IN_PROCESS_GRACE_S,
    )
    app = build_app(settings)
    async with (
        running(AWARENESS, namespace.settings(await namespace.create_database("awareness"))),
        running(ENGAGEMENT, namespace.settings(await namespace.create_database("engagement"))),
        running(ADVOCACY, namespace.settings(await namespace.create_database("advocacy"))),
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gateway",
            headers={"Authorization": f"Bearer {KEY}"},
        ) as client,
    ):
        yield client


async def _discourse(client: httpx.AsyncClient, event: str, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    response = await client.post(
        "/v1/webhooks/discourse",
        content=body,
        headers={
            "content-type": "application/json",
            "X-Discourse-Instance": "https://forum.example.org",
            "X-Discourse-Event-Id": f"{event}-{len(body)}",
            "X-Discourse-Event-Type": next(iter(payload)),
            "X-Discourse-Event": event,
            "X-Discourse-Event-Signature": sign_discourse(DISCOURSE_SECRET, body),
        },
    )
    assert response.status_code == 202, response.text


async def _github(client: httpx.AsyncClient, event: str, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    response = await client.post(
        "/v1/webhooks/github",
        content=body,
        headers={
            "content-type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": f"{event}-{len(body)}",
            "X-Hub-Signature-256": sign_github(GITHUB_SECRET, body),
        },
    )
    assert response.status_code == 202, response.text


def _message(user: str, ts: str, text: str, **more: str) -> dict[str, Any]:
    return {
        "type": "message",
        "channel": "C01",
        "user": user,
        "text": text,
        "ts": ts,
        "event_ts": ts,
        "channel_type": "channel",
        **more,
    }


async def _dora_lives(client: httpx.AsyncClient) -> str:
    """Her history, through every way in; returns her member id."""
    profile = {"email": EMAIL, "display_name": "Dora M."}
    await _slack(
        client,
        "EvD1",
        {
            "type": "team_join",
            "event_ts": "1767607200.000100",
            "user": {
                "id": SLACK_ID,
                "name": HANDLES[0],
                "is_email_confirmed": True,
                "profile": profile,
            },
        },
    )
    await _slack(
        client,
        "EvK1",
        {"type": "team_join", "event_ts": "1767607201.000100", "user": {"id": KIM, "name": "kim"}},
    )
    dora = member_of("slack", SLACK_ID)
    user = {
        "id": FORUM_ID,
        "username": HANDLES[1],
        "email": EMAIL,
        "active": True,
        "created_at": "2026-01-05T09:10:00Z",
    }
    await _discourse(client, "user_created", {"user": user})
    await _discourse(
        client,
        "topic_created",
        {
            "topic": {
                "id": 61,
                "title": "Replaying a topic",
                "slug": "replay",
                "created_at": "2026-01-05T09:20:00.000Z",
                "archetype": "regular",
                "user_id": FORUM_ID,
                "created_by": {"id": FORUM_ID, "username": HANDLES[1]},
                "tags": ["question"],
            }
        },
    )
    await _discourse(
        client,
        "post_created",
        {
            "post": {
                "id": 145,
                "username": "kim",
                "user_id": 55,
                "post_number": 2,
                "post_type": 1,
                "created_at": "2026-01-05T10:00:00.000Z",
                "topic_id": 61,
                "topic_slug": "replay",
                "topic_title": "Replaying a topic",
                "raw": "Reset the group to the earliest offset.",
                "topic_archetype": "regular",
            }
        },
    )
    ask = "1767610800.000100"
    await _slack(client, "EvD2", _message(SLACK_ID, ask, QUESTION))
    await _slack(
        client,
        "EvK2",
        _message(KIM, "1767611400.000100", "Use the CLI.", thread_ts=ask, parent_user_id=SLACK_ID),
    )
    await _slack(
        client,
        "EvD3",
        {
            "type": "reaction_added",
            "user": SLACK_ID,
            "reaction": "tada",
            "item": {"type": "message", "channel": "C01", "ts": "1767611400.000100"},
            "item_user": KIM,
            "event_ts": "1767611500.000100",
        },
    )
    await _slack(
        client,
        "EvK3",
        {
            "type": "member_joined_channel",
            "user": KIM,
            "channel": "C02",
            "inviter": SLACK_ID,
            "event_ts": "1767611600.000100",
        },
    )
    # her GitHub account, linked by an operator before it was ever seen
    linked = await client.post(
        f"/v1/members/{dora}/identities",
        json={"platform": "github", "platform_user_id": str(GITHUB_ID)},
    )
    assert linked.status_code == 200, linked.text
    gh = {
        "id": GITHUB_ID,
        "login": HANDLES[2],
        "type": "User",
        "html_url": f"https://github.com/{HANDLES[2]}",
    }
    await _github(
        client,
        "issue_comment",
        {
            "action": "created",
            "issue": {
                "id": 1,
                "number": 7,
                "title": "Replay",
                "author_association": "NONE",
                "user": {"id": 11, "login": "ada", "type": "User"},
            },
            "comment": {
                "id": 5,
                "user": gh,
                "author_association": "CONTRIBUTOR",
                "created_at": "2026-01-05T11:00:00Z",
                "body": "Same here.",
                "html_url": "https://github.com/octo/flywheel/issues/7#issuecomment-5",
            },
            "repository": REPO,
            "sender": gh,
        },
    )
    await _github(
        client,
        "star",
        {
            "action": "created",
            "starred_at": "2026-01-05T11:10:00Z",
            "repository": REPO,
            "sender": gh,
        },
    )
    fork = {
        "id": 500,
        "full_name": f"{HANDLES[2]}/flywheel",
        "owner": gh,
        "html_url": f"https://github.com/{HANDLES[2]}/flywheel",
        "created_at": "2026-01-05T11:20:00Z",
    }
    await _github(client, "fork", {"forkee": fork, "repository": REPO, "sender": gh})
    # a client of the API that sends her handle and email along
    posted = await client.post(
        "/v1/activities",
        json={
            "activity_id": "crm-note-1",
            "occurred_at": "2026-01-05T12:00:00Z",
            "source": "crm",
            "kind": "event_attended",
            "actor": {
                "member_id": dora,
                "handle": HANDLES[0],
                "email": EMAIL,
                "platform_user_id": SLACK_ID,
            },
        },
    )
    assert posted.status_code == 202, posted.text
    return dora


async def _every_record(namespace: Namespace) -> list[tuple[str, bytes]]:
    """(topic, key + headers + value, lower case) of every record of every topic."""
    found: list[tuple[str, bytes]] = []
    for topic in ALL_TOPICS:
        for r in await read_all(namespace, topic.name):
            raw = (r.key or b"") + b"".join(n.encode() + v for n, v in r.headers) + r.value
            found.append((topic.name, raw.lower()))
    return found


async def test_after_an_erasure_no_retained_topic_holds_the_persons_identifiers(
    namespace: Namespace, gateway: httpx.AsyncClient
) -> None:
    dora = await _dora_lives(gateway)

    async def judged() -> None:  # the stage services have seen her: transitions name her
        records = await _every_record(namespace)
        named = {t for t, raw in records if dora.encode() in raw}
        assert {"member-activity", "journey-transitions"} <= named, named

    await eventually(judged)
    # the gateway still knows her by name: the directory shows her handle
    listed = (await gateway.get("/v1/members", params={"q": "dora"})).json()
    assert [(m["member_id"], m["handle"]) for m in listed["members"]] == [(dora, HANDLES[0])]

    # her request to be erased comes with her email: whose is it?
    found = await gateway.get("/v1/identities", params={"email": EMAIL.upper()})
    assert found.status_code == 200 and found.json() == {"member_id": dora}, found.text
    account = {"platform": "github", "platform_user_id": str(GITHUB_ID)}
    assert (await gateway.get("/v1/identities", params=account)).json() == {"member_id": dora}
    unknown = await gateway.get("/v1/identities", params={"email": "nobody@example.org"})
    assert unknown.status_code == 404 and "no member has this email" in unknown.text
    vague = await gateway.get("/v1/identities", params={"platform": "github"})
    assert vague.status_code == 400 and "platform_user_id" in vague.text

    erased = await gateway.delete(f"/v1/members/{dora}")
    assert erased.status_code == 202, erased.text
    assert erased.json()["identities_blocked"] == 4  # Slack, forum, GitHub, the email

    records = await _every_record(namespace)
    assert {"member-activity", "journey-transitions", "member-lifecycle"} <= {t for t, _ in records}
    # the scan reads values: her own words are there (docs/SECURITY.md says what remains)
    assert any(QUESTION.lower().encode() in raw for _, raw in records)
    leaks = {
        (topic, needle)
        for topic, raw in records
        for needle in NEEDLES
        if needle.lower().encode() in raw
    }
    assert leaks == set()
    gone = await gateway.get("/v1/identities", params={"email": EMAIL})
    assert gone.status_code == 404, gone.text
    # and the gateway forgot her handle
    listed = (await gateway.get("/v1/members", params={"q": "dora"})).json()
    assert listed["members"] == []


async def test_the_pseudonym_key_is_kept_and_another_one_stops_the_gateway(
    namespace: Namespace,
) -> None:
    """Unset, the key is generated once and kept (the same ids after a restart); set to the
    kept key, the copy leaves the database; another key stops the gateway, naming the
    variable, before any member could get a new id."""
    url = await namespace.create_database("gateway")

    async def resolved(**settings: Any) -> str:
        app = build_app(
            namespace.settings(
                url, clock_tick_interval_s=0, shutdown_grace_s=IN_PROCESS_GRACE_S, **settings
            )
        )
        async with app.router.lifespan_context(app):
            identities = app.state.identities
            return str(await identities.resolve("github", "583231"))

    generated = await resolved(pseudonym_key=None)
    assert generated.startswith("m-") and "583231" not in generated
    assert await resolved(pseudonym_key=None) == generated  # kept across a restart
    conn = await asyncpg.connect(url)
    try:
        kept = await conn.fetchval("SELECT key FROM pseudonym_key")
        await conn.execute("DELETE FROM identities")  # so the id is computed, not looked up
        assert await resolved(pseudonym_key=kept) == generated  # the same key, from outside
        assert await conn.fetchval("SELECT key FROM pseudonym_key") is None  # moved out
    finally:
        await conn.close()
    with pytest.raises(PseudonymKeyError, match="FLYWHEEL_PSEUDONYM_KEY is not the key"):
        await resolved(pseudonym_key="another-key-Xk29dLq83mZp7tRw")
    with pytest.raises(PseudonymKeyError, match="FLYWHEEL_PSEUDONYM_KEY is not set"):
        await resolved(pseudonym_key=None)
