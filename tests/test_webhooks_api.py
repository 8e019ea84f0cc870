"""Inbound webhooks over HTTP, with the recording publisher and the in-memory store.

What a platform sends is authenticated by its own signature over the raw bytes, or refused
with 401 and nothing published; a redelivery is published once; nothing a platform sends
gets a 5xx.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.gateway.bootstrap import create_app
from services.gateway.webhooks import InMemoryWebhookStore, WebhookStats, router
from services.gateway.webhooks.signatures import (
    SignatureError,
    sign_discourse,
    sign_github,
    sign_slack,
    verify_github,
    verify_slack,
)
from shared.cloudevents import OutgoingRecord, decode, derive_event_id
from shared.contracts import ActivityV1
from tests.test_gateway_api import AUTH, FakeJourney, Readiness, RecordingPublisher, settings

GITHUB_SECRET = "It's a Secret to Everybody"
DISCOURSE_SECRET = "discourse-test-secret"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Hooks:
    """A gateway with the webhook router, and what it published and remembered."""

    client: TestClient
    publisher: RecordingPublisher
    store: InMemoryWebhookStore
    stats: WebhookStats
    clock: Clock

    def activities(self) -> list[ActivityV1]:
        return [activity_of(r) for r in self.publisher.records]

    def github(
        self,
        event: str,
        payload: dict[str, Any] | bytes,
        *,
        delivery: str = "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        secret: str = GITHUB_SECRET,
        headers: dict[str, str] | None = None,
    ) -> Any:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sent = {
            "content-type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": sign_github(secret, body),
            "User-Agent": "GitHub-Hookshot/044aadd",
        }
        sent.update(headers or {})
        return self.client.post("/v1/webhooks/github", content=body, headers=sent)

    def discourse(
        self,
        event: str,
        payload: dict[str, Any],
        *,
        event_type: str | None = None,
        delivery: str = "101",
        secret: str = DISCOURSE_SECRET,
    ) -> Any:
        body = json.dumps(payload).encode()
        headers = {
            "content-type": "application/json",
            "X-Discourse-Instance": "https://forum.example.org",
            "X-Discourse-Event-Id": delivery,
            "X-Discourse-Event-Type": event_type or next(iter(payload)),
            "X-Discourse-Event": event,
            "X-Discourse-Event-Signature": sign_discourse(secret, body),
        }
        return self.client.post("/v1/webhooks/discourse", content=body, headers=headers)

    def slack(
        self,
        payload: dict[str, Any],
        *,
        secret: str = SLACK_SECRET,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        body = json.dumps(payload).encode()
        ts = int(self.clock().timestamp()) if timestamp is None else timestamp
        sent = {
            "content-type": "application/json",
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": sign_slack(secret, body, ts),
        }
        sent.update(headers or {})
        return self.client.post("/v1/webhooks/slack", content=body, headers=sent)


def activity_of(record: OutgoingRecord) -> ActivityV1:
    envelope = decode(
        topic=record.topic,
        partition=0,
        offset=0,
        key=record.key,
        value=record.value,
        headers=record.headers,
    )
    assert isinstance(envelope.data, ActivityV1)
    assert envelope.key == envelope.data.actor.member_id
    assert envelope.id == derive_event_id(
        "activity", envelope.data.source, envelope.data.activity_id
    )
    return envelope.data


def make_hooks(**overrides: Any) -> Iterator[Hooks]:
    publisher, store, clock = RecordingPublisher(), InMemoryWebhookStore(), Clock()
    stats = WebhookStats(clock)
    configured = settings(
        **{
            "max_request_bytes": 1_048_576,
            "github_webhook_secret": GITHUB_SECRET,
            "discourse_webhook_secret": DISCOURSE_SECRET,
            "slack_signing_secret": SLACK_SECRET,
        }
        | overrides
    )
    app = create_app(
        publisher=publisher, journey=FakeJourney(), readiness=Readiness(), settings=configured
    )
    app.include_router(
        router(publisher=publisher, store=store, settings=configured, clock=clock, stats=stats)
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Hooks(client, publisher, store, stats, clock)


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    yield from make_hooks()


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["type"] and body["title"] and body["detail"]
    return body


def user(uid: int, login: str, kind: str = "User") -> dict[str, Any]:
    return {"id": uid, "login": login, "type": kind}


REPO = {
    "id": 186853002,
    "full_name": "octo/flywheel",
    "html_url": "https://github.com/octo/flywheel",
}


def issue_comment(comment_id: int = 5, commenter: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "action": "created",
        "issue": {
            "id": 1,
            "number": 7,
            "title": "How do I replay a topic?",
            "user": user(11, "ada"),
            "author_association": "NONE",
        },
        "comment": {
            "id": comment_id,
            "user": commenter or user(12, "bob"),
            "author_association": "CONTRIBUTOR",
            "created_at": "2026-01-05T10:00:00Z",
            "html_url": f"https://github.com/octo/flywheel/issues/7#issuecomment-{comment_id}",
            "body": "Reset the consumer group to the earliest offset.",
        },
        "repository": REPO,
        "sender": commenter or user(12, "bob"),
    }


def slack_message(event_id: str = "Ev0001", **event: Any) -> dict[str, Any]:
    body = {
        "type": "message",
        "channel": "C0123",
        "user": "U0ADA",
        "text": "How do I replay a topic?",
        "ts": "1767607200.000100",
        "event_ts": "1767607200.000100",
        "channel_type": "channel",
    }
    body.update(event)
    return {
        "token": "legacy-verification-token",
        "team_id": "T0TEAM",
        "api_app_id": "A0APP",
        "event": body,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1767607200,
    }


# ---- signatures: the platforms' own test vectors --------------------------------------------


def test_githubs_documented_test_vector() -> None:
    """From GitHub's 'Validating webhook deliveries'."""
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign_github("It's a Secret to Everybody", b"Hello, World!") == expected
    verify_github(GITHUB_SECRET, b"Hello, World!", {"X-Hub-Signature-256": expected})
    with pytest.raises(SignatureError):
        verify_github(GITHUB_SECRET, b"Hello, World?", {"X-Hub-Signature-256": expected})


def test_slacks_documented_example() -> None:
    """From Slack's 'Verifying requests from Slack' (the signing secret and body it shows)."""
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
        b"channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
        b"command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
        b"commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
        b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    signature = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    assert sign_slack(SLACK_SECRET, body, 1531420618) == signature
    headers = {"X-Slack-Request-Timestamp": "1531420618", "X-Slack-Signature": signature}
    verify_slack(SLACK_SECRET, body, headers, now=1531420618 + 299)
    with pytest.raises(SignatureError, match="five minutes"):
        verify_slack(SLACK_SECRET, body, headers, now=1531420618 + 301)


# ---- signatures over HTTP --------------------------------------------------------------------


def test_a_signed_github_delivery_is_published(hooks: Hooks) -> None:
    response = hooks.github("issue_comment", issue_comment())

    assert response.status_code == 202, response.text
    assert response.json() == {
        "status": "accepted",
        "source": "github",
        "event": "issue_comment.created",
        "delivery_id": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "activities": ["github:issue_comment:5"],
    }
    [reply] = hooks.activities()
    assert (reply.kind, reply.actor.member_id) == ("reply", "github:12")
    assert reply.target is not None and reply.target.thread_author_member_id == "github:11"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        pytest.param({"X-Hub-Signature-256": ""}, "missing", id="missing"),
        pytest.param({"X-Hub-Signature-256": "sha256=" + "0" * 64}, "does not match", id="wrong"),
        pytest.param(
            {"X-Hub-Signature-256": "sha256=\xff\xff".encode("latin-1")},
            "does not match",
            id="not-ascii",
        ),
        pytest.param({"X-Hub-Signature": "sha1=" + "0" * 40}, "missing", id="sha1-only"),
    ],
)
def test_a_github_delivery_without_a_valid_signature_is_refused(
    hooks: Hooks, change: dict[str, Any], why: str
) -> None:
    body = json.dumps(issue_comment()).encode()
    headers: dict[str, Any] = {
        "content-type": "application/json",
        "X-GitHub-Event": "issue_comment",
        "X-GitHub-Delivery": "d-1",
        **change,
    }
    if not headers.get("X-Hub-Signature-256"):
        headers.pop("X-Hub-Signature-256", None)
    response = hooks.client.post(
        "/v1/webhooks/github", content=body, headers={k: v for k, v in headers.items()}
    )

    problem = assert_problem(response, 401)
    assert why in problem["detail"]
    assert "www-authenticate" in response.headers
    assert hooks.publisher.records == [] and hooks.store.deliveries == {}
    assert hooks.stats.get("github", "-", "rejected") == 1


def test_a_signature_made_with_another_secret_or_over_other_bytes_is_refused(
    hooks: Hooks,
) -> None:
    assert_problem(hooks.github("issue_comment", issue_comment(), secret="guess"), 401)
    body = json.dumps(issue_comment()).encode()
    reformatted = json.dumps(issue_comment(), indent=2).encode()  # same JSON, other bytes
    response = hooks.client.post(
        "/v1/webhooks/github",
        content=reformatted,
        headers={
            "X-GitHub-Event": "issue_comment",
            "X-GitHub-Delivery": "d-1",
            "X-Hub-Signature-256": sign_github(GITHUB_SECRET, body),
        },
    )
    assert_problem(response, 401)
    assert hooks.publisher.records == []


def test_discourse_signatures(hooks: Hooks) -> None:
    payload = {"user": {"id": 10, "username": "dee", "created_at": "2026-01-04T08:00:00Z"}}
    assert_problem(hooks.discourse("user_created", payload, secret="wrong"), 401)
    assert hooks.publisher.records == []
    assert hooks.discourse("user_created", payload).status_code == 202
    assert [a.kind for a in hooks.activities()] == ["signup"]


def test_slack_signatures_and_the_five_minute_window(hooks: Hooks) -> None:
    now = int(NOW.timestamp())
    assert_problem(hooks.slack(slack_message(), secret="wrong"), 401)
    stale = hooks.slack(slack_message(), timestamp=now - 301)
    assert "five minutes" in assert_problem(stale, 401)["detail"]
    assert_problem(hooks.slack(slack_message(), timestamp=now + 301), 401)  # from the future
    assert_problem(hooks.slack(slack_message(), headers={"X-Slack-Request-Timestamp": "x"}), 401)
    assert hooks.publisher.records == []

    assert hooks.slack(slack_message(), timestamp=now - 290).status_code == 202
    assert len(hooks.publisher.records) == 1


def test_the_slack_challenge_is_answered_only_once_the_signature_checks(hooks: Hooks) -> None:
    challenge = {
        "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "type": "url_verification",
    }
    refused = hooks.slack(challenge, secret="wrong")
    assert_problem(refused, 401)
    assert challenge["challenge"] not in refused.text

    answered = hooks.slack(challenge)
    assert answered.status_code == 200
    assert answered.json() == {"challenge": challenge["challenge"]}
    assert hooks.publisher.records == []


def test_a_platform_without_a_secret_is_not_found() -> None:
    for hooks in make_hooks(github_webhook_secret=None, slack_signing_secret=""):
        problem = assert_problem(hooks.github("issue_comment", issue_comment()), 404)
        assert "FLYWHEEL_GITHUB_WEBHOOK_SECRET" in problem["detail"]
        assert (
            "FLYWHEEL_SLACK_SIGNING_SECRET"
            in assert_problem(hooks.slack(slack_message()), 404)["detail"]
        )
        assert hooks.publisher.records == []
        # the others still work
        payload = {"user": {"id": 10, "username": "dee", "created_at": "2026-01-04T08:00:00Z"}}
        assert hooks.discourse("user_created", payload).status_code == 202


def test_webhooks_need_no_api_key_and_ignore_one(hooks: Hooks) -> None:
    assert "authorization" not in {k.lower() for k in hooks.client.headers}
    body = json.dumps(issue_comment()).encode()
    headers = {
        "X-GitHub-Event": "issue_comment",
        "X-GitHub-Delivery": "d-2",
        "X-Hub-Signature-256": "sha256=" + "0" * 64,
        **AUTH,  # a valid API key does not stand in for the signature
    }
    assert_problem(hooks.client.post("/v1/webhooks/github", content=body, headers=headers), 401)


# ---- never a 5xx for what a platform sends ------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        pytest.param(b"{not json", {}, 400, id="not-json"),
        pytest.param(b"[1, 2]", {}, 400, id="not-an-object"),
        pytest.param(b"", {}, 400, id="empty"),
        pytest.param(b'{"action": "created"}', {}, 400, id="mapped-event-missing-fields"),
        pytest.param(
            b'{"action": "created", "comment": "text", "issue": {}, "repository": {}}',
            {},
            400,
            id="wrong-types",
        ),
        pytest.param(b"{}", {"X-GitHub-Event": ""}, 400, id="no-event-header"),
        pytest.param(b"{}", {"X-GitHub-Delivery": ""}, 400, id="no-delivery-header"),
        pytest.param(b"{}", {"X-GitHub-Event": "Bad Event"}, 400, id="odd-event-name"),
        pytest.param(
            b"payload=%7Bnot",
            {"content-type": "application/x-www-form-urlencoded"},
            400,
            id="bad-form",
        ),
    ],
)
def test_malformed_github_deliveries_are_bad_requests(
    hooks: Hooks, body: bytes, headers: dict[str, str], status: int
) -> None:
    sent = {"X-GitHub-Event": "issue_comment", "X-GitHub-Delivery": "d-1"} | headers
    sent = {k: v for k, v in sent.items() if v}
    sent["X-Hub-Signature-256"] = sign_github(GITHUB_SECRET, body)
    response = hooks.client.post("/v1/webhooks/github", content=body, headers=sent)
    assert_problem(response, status)
    assert hooks.publisher.records == []


def test_a_malformed_field_is_named(hooks: Hooks) -> None:
    payload = issue_comment()
    payload["comment"]["user"] = {"login": "bob"}
    problem = assert_problem(hooks.github("issue_comment", payload), 400)
    assert problem["errors"] == [
        {"pointer": "/comment/user/id", "detail": problem["errors"][0]["detail"]}
    ]
    assert hooks.stats.get("github", "issue_comment.created", "malformed") == 1


def test_a_form_encoded_github_delivery(hooks: Hooks) -> None:
    from urllib.parse import urlencode

    body = urlencode({"payload": json.dumps(issue_comment())}).encode()
    response = hooks.github(
        "issue_comment", body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 202, response.text
    assert [a.activity_id for a in hooks.activities()] == ["github:issue_comment:5"]


def test_a_body_over_the_limit_is_refused() -> None:
    for hooks in make_hooks(max_request_bytes=2048):
        payload = issue_comment()
        payload["comment"]["body"] = "x" * 4096
        assert_problem(hooks.github("issue_comment", payload), 413)
        assert hooks.publisher.records == []


# ---- ignored events are acknowledged and counted ---------------------------------------------


def test_events_not_mapped_are_acknowledged_and_counted(hooks: Hooks) -> None:
    labeled = hooks.github("issues", {"action": "labeled", "issue": {}}, delivery="d-1")
    ping = hooks.github("ping", {"zen": "Design for failure.", "hook_id": 1}, delivery="d-2")
    edited = hooks.slack(slack_message(event_id="Ev9", subtype="message_changed"))
    topic_pm = hooks.discourse("post_created", {"post": {"topic_archetype": "private_message"}})

    for response in (labeled, ping, edited, topic_pm):
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "ignored" and response.json()["reason"]
    assert labeled.json()["event"] == "issues.labeled"
    assert hooks.publisher.records == []

    stats = hooks.client.get("/v1/webhooks/stats", headers=AUTH)
    assert stats.status_code == 200
    assert stats.json()["sources"] == {
        "discourse": {"post_created": {"ignored": 1}},
        "github": {"issues.labeled": {"ignored": 1}, "ping": {"ignored": 1}},
        "slack": {"message.message_changed": {"ignored": 1}},
    }


def test_stats_need_the_admin_scope() -> None:
    for hooks in make_hooks(api_keys="r=read-only-key-12345:read;a=admin-only-key-12345:admin"):
        assert_problem(hooks.client.get("/v1/webhooks/stats"), 401)
        forbidden = hooks.client.get(
            "/v1/webhooks/stats", headers={"X-API-Key": "read-only-key-12345"}
        )
        assert_problem(forbidden, 403)
        allowed = hooks.client.get(
            "/v1/webhooks/stats", headers={"X-API-Key": "admin-only-key-12345"}
        )
        assert allowed.status_code == 200
        assert allowed.json()["since"] == "2026-01-05T12:00:00Z"


def test_other_slack_envelopes_are_acknowledged(hooks: Hooks) -> None:
    response = hooks.slack({"type": "app_rate_limited", "minute_rate_limited": 1518467820})
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert hooks.publisher.records == []


# ---- redeliveries ------------------------------------------------------------------------


def test_a_redelivery_is_published_once(hooks: Hooks) -> None:
    first = hooks.github("issue_comment", issue_comment(), delivery="d-42")
    again = hooks.github("issue_comment", issue_comment(), delivery="d-42")

    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["status"] == "duplicate"
    assert len(hooks.publisher.records) == 1
    assert hooks.store.deliveries[("github", "d-42")] == (
        "issue_comment.created",
        ["github:issue_comment:5"],
    )
    assert hooks.stats.get("github", "issue_comment.created", "duplicate") == 1


def test_slack_retries_are_published_once(hooks: Hooks) -> None:
    assert hooks.slack(slack_message("Ev77")).status_code == 202
    retry = hooks.slack(
        slack_message("Ev77"), headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "x"}
    )
    assert retry.json()["status"] == "duplicate"
    assert len(hooks.publisher.records) == 1


def test_discourse_redeliveries_are_published_once(hooks: Hooks) -> None:
    payload = {"user": {"id": 10, "username": "dee", "created_at": "2026-01-04T08:00:00Z"}}
    assert hooks.discourse("user_created", payload, delivery="7").status_code == 202
    assert hooks.discourse("user_created", payload, delivery="7").json()["status"] == "duplicate"
    assert len(hooks.publisher.records) == 1


def test_without_the_store_a_redelivery_carries_the_same_event_id(hooks: Hooks) -> None:
    """The store is down (or two replicas race): published twice, but as the same event."""
    hooks.store.down = True
    assert hooks.github("issue_comment", issue_comment(), delivery="d-1").status_code == 202
    assert hooks.github("issue_comment", issue_comment(), delivery="d-1").status_code == 202
    first, second = hooks.publisher.records
    assert (
        first.event_id
        == second.event_id
        == derive_event_id("activity", "github", "github:issue_comment:5")
    )


def test_a_delivery_the_broker_refused_is_published_when_redelivered(hooks: Hooks) -> None:
    hooks.publisher.fail = True
    refused = hooks.github("issue_comment", issue_comment(), delivery="d-9")
    assert_problem(refused, 503)
    assert "retry-after" in refused.headers
    assert hooks.store.deliveries == {}  # not remembered: the redelivery must go through

    hooks.publisher.fail = False
    assert hooks.github("issue_comment", issue_comment(), delivery="d-9").status_code == 202
    assert len(hooks.publisher.records) == 1
    assert hooks.stats.get("github", "issue_comment.created", "unavailable") == 1


def test_the_same_object_from_two_deliveries_has_one_event_id(hooks: Hooks) -> None:
    """GitHub sends `star` and `watch` for one star; an org hook and a repo hook both
    deliver: different delivery ids, one activity id, one event id."""
    sender = user(12, "bob")
    star = {
        "action": "created",
        "starred_at": "2026-01-05T10:00:00Z",
        "repository": REPO,
        "sender": sender,
    }
    watch = {"action": "started", "repository": REPO, "sender": sender}
    assert hooks.github("star", star, delivery="d-star").status_code == 202
    assert hooks.github("watch", watch, delivery="d-watch").status_code == 202
    first, second = hooks.publisher.records
    assert first.event_id == second.event_id


# ---- thread authors the payload does not carry -------------------------------------------


def _discourse_post(post_id: int, user_id: int, username: str, number: int) -> dict[str, Any]:
    return {
        "post": {
            "id": post_id,
            "username": username,
            "created_at": "2026-01-05T10:00:00.000Z",
            "post_number": number,
            "post_type": 1,
            "reply_to_post_number": None,
            "topic_id": 61,
            "topic_slug": "replay",
            "topic_title": "How do I replay a topic?",
            "raw": "Reset the group.",
            "user_id": user_id,
            "staff": False,
            "topic_archetype": "regular",
        }
    }


def test_a_discourse_reply_learns_the_topics_author_from_the_topic(hooks: Hooks) -> None:
    topic = {
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
    early = hooks.discourse("post_created", _discourse_post(140, 8, "bob", 2), delivery="1")
    assert hooks.discourse("topic_created", topic, delivery="2").status_code == 202
    later = hooks.discourse("post_created", _discourse_post(145, 9, "cy", 3), delivery="3")
    assert early.status_code == later.status_code == 202

    replies = [a for a in hooks.activities() if a.kind == "reply"]
    assert [(a.actor.member_id, a.target.thread_author_member_id) for a in replies if a.target] == [
        ("discourse:8", None),  # before the topic was seen: unknown
        ("discourse:9", "discourse:7"),
    ]
    assert replies[1].target is not None
    assert replies[1].target.parent_author_member_id == "discourse:7"


# ---- OpenAPI -------------------------------------------------------------------------------


def test_openapi_documents_webhooks_as_signature_authenticated(hooks: Hooks) -> None:
    document = hooks.client.get("/openapi.json").json()
    for source in ("github", "discourse", "slack"):
        operation = document["paths"][f"/v1/webhooks/{source}"]["post"]
        assert operation["security"] == []
        assert {"200", "202", "400", "401", "404", "503"} <= set(operation["responses"])
    stats = document["paths"]["/v1/webhooks/stats"]["get"]
    assert {"bearer": ["admin"]} in stats["security"]


def test_the_clock_decides_what_is_stale() -> None:
    for hooks in make_hooks():
        hooks.clock.now = NOW + timedelta(minutes=10)
        sent_at = int(NOW.timestamp())
        assert_problem(hooks.slack(slack_message(), timestamp=sent_at), 401)
        assert hooks.slack(slack_message(), timestamp=sent_at + 600).status_code == 202
