"""Discourse and Slack deliveries, per event type, as the platforms document them.

The fixtures follow the platforms' documented shapes: Discourse's webhook bodies are
`{<event type>: <serialized object>}` (WebHookTopicViewSerializer, WebHookPostSerializer,
WebHookLikeSerializer, WebHookUserSerializer; the solved plugin sends the accepted post
under `solved`), Slack's are Events API `event_callback` envelopes. Identifiers are
illustrative.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.gateway.webhooks.mapping import CLAMPED_FROM, clamp_future
from services.gateway.webhooks.signatures import sign_discourse
from shared import metrics
from shared.contracts import ActivityV1
from shared.members import member_id
from tests.factories import activity
from tests.test_webhooks_api import (
    DISCOURSE_SECRET,
    NOW,
    Hooks,
    issue_comment,
    make_hooks,
    slack_message,
)

FORUM = "https://forum.example.org"


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    yield from make_hooks()


# ---- Discourse ------------------------------------------------------------------------------

TOPIC_CREATED: dict[str, Any] = {
    "topic": {
        "tags": ["question", "kafka"],
        "tags_descriptions": {},
        "id": 61,
        "title": "How do I replay a topic from the beginning?",
        "fancy_title": "How do I replay a topic from the beginning?",
        "posts_count": 1,
        "created_at": "2026-01-05T09:00:00.000Z",
        "views": 0,
        "reply_count": 0,
        "like_count": 0,
        "last_posted_at": "2026-01-05T09:00:00.000Z",
        "visible": True,
        "closed": False,
        "archived": False,
        "archetype": "regular",
        "slug": "how-do-i-replay-a-topic-from-the-beginning",
        "category_id": 5,
        "word_count": 42,
        "deleted_at": None,
        "user_id": 7,
        "featured_link": None,
        "pinned_globally": False,
        "pinned": False,
        "highest_post_number": 1,
        "participant_count": 1,
        "created_by": {
            "id": 7,
            "username": "ada",
            "name": "Ada",
            "avatar_template": "/user_avatar/forum.example.org/ada/{size}/2_2.png",
        },
        "last_poster": {"id": 7, "username": "ada", "name": "Ada", "avatar_template": "/a.png"},
    }
}


def post(
    post_id: int = 145, user_id: int = 8, username: str = "bob", **fields: Any
) -> dict[str, Any]:
    """A WebHookPostSerializer object."""
    body: dict[str, Any] = {
        "id": post_id,
        "name": username.title(),
        "username": username,
        "avatar_template": f"/user_avatar/forum.example.org/{username}/{{size}}/3_2.png",
        "created_at": "2026-01-05T10:00:00.000Z",
        "cooked": "<p>Reset the consumer group to the earliest offset.</p>",
        "post_number": 2,
        "post_type": 1,
        "updated_at": "2026-01-05T10:00:00.000Z",
        "reply_count": 0,
        "reply_to_post_number": None,
        "quote_count": 0,
        "incoming_link_count": 0,
        "reads": 1,
        "score": 0,
        "topic_id": 61,
        "topic_slug": "how-do-i-replay-a-topic-from-the-beginning",
        "topic_title": "How do I replay a topic from the beginning?",
        "category_id": 5,
        "display_username": username.title(),
        "primary_group_name": None,
        "version": 1,
        "user_title": None,
        "bookmarked": False,
        "raw": "Reset the consumer group to the earliest offset.",
        "moderator": False,
        "admin": False,
        "staff": False,
        "user_id": user_id,
        "hidden": False,
        "trust_level": 1,
        "deleted_at": None,
        "user_deleted": False,
        "edit_reason": None,
        "wiki": False,
        "topic_posts_count": 2,
        "topic_filtered_posts_count": 2,
        "topic_archetype": "regular",
        "category_slug": "support",
    }
    body.update(fields)
    return body


USER_CREATED: dict[str, Any] = {
    "user": {
        "id": 10,
        "username": "dee",
        "name": "Dee",
        "avatar_template": "/user_avatar/forum.example.org/dee/{size}/4_2.png",
        "email": "dee@example.org",
        "secondary_emails": [],
        "last_posted_at": None,
        "last_seen_at": None,
        "created_at": "2026-01-04T08:00:00.000Z",
        "trust_level": 0,
        "moderator": False,
        "admin": False,
        "title": None,
        "badge_count": 0,
        "active": True,
        "staged": False,
    }
}


def test_discourse_topic_created_is_a_post(hooks: Hooks) -> None:
    assert hooks.discourse("topic_created", TOPIC_CREATED).status_code == 202
    [topic] = hooks.activities()
    assert (topic.kind, topic.activity_id) == ("post", "discourse:topic:61")
    assert topic.actor.member_id == "discourse:7" and topic.actor.handle == "ada"
    assert topic.actor.platform_user_id == "7"
    assert topic.occurred_at == datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    assert topic.target is not None
    assert topic.target.thread_id == "discourse:topic:61"
    assert topic.target.thread_author_member_id == "discourse:7"
    assert topic.target.url == f"{FORUM}/t/how-do-i-replay-a-topic-from-the-beginning/61"
    assert topic.properties["tags"] == ["question", "kafka"]
    assert topic.properties["question"] is True


def test_discourse_replies_know_the_topics_author_and_their_parent(hooks: Hooks) -> None:
    hooks.discourse("topic_created", TOPIC_CREATED, delivery="1")
    hooks.discourse("post_created", {"post": post()}, delivery="2")
    nested = post(146, 7, "ada", post_number=3, reply_to_post_number=2)
    hooks.discourse("post_created", {"post": nested}, delivery="3")

    _, reply, answer_to_reply = hooks.activities()
    assert (reply.kind, reply.actor.member_id) == ("reply", "discourse:8")
    assert reply.target is not None
    assert reply.target.thread_author_member_id == "discourse:7"
    assert reply.target.parent_author_member_id == "discourse:7"  # a reply to the topic
    assert reply.target.url == f"{FORUM}/t/how-do-i-replay-a-topic-from-the-beginning/61/2"
    assert reply.properties["text"] == "Reset the consumer group to the earliest offset."
    assert answer_to_reply.target is not None
    assert answer_to_reply.target.parent_id == "discourse:topic:61/2"
    assert answer_to_reply.target.parent_author_member_id is None  # post 2's author: not said


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        pytest.param({"post_number": 1}, "first post", id="first-post"),
        pytest.param({"post_type": 4}, "whisper", id="whisper"),
        pytest.param({"post_type": 3}, "small action", id="small-action"),
        pytest.param({"topic_archetype": "private_message"}, "private", id="private-message"),
    ],
)
def test_discourse_posts_that_are_not_replies(
    hooks: Hooks, fields: dict[str, Any], reason: str
) -> None:
    response = hooks.discourse("post_created", {"post": post(**fields)})
    assert response.status_code == 200
    assert reason in response.json()["reason"]
    assert hooks.publisher.records == []


def test_discourse_staff_and_system_accounts(hooks: Hooks) -> None:
    hooks.discourse("post_created", {"post": post(200, 3, "mod", staff=True, moderator=True)})
    hooks.discourse("post_created", {"post": post(201, -1, "system")}, delivery="2")
    staff, system = hooks.activities()
    assert staff.actor.is_team_member and not staff.actor.is_bot
    assert system.actor.is_bot and system.actor.member_id == "discourse:-1"


@pytest.mark.parametrize("first_post_first", [True, False])
def test_discourse_replies_say_when_the_topic_was_started_by_staff(
    hooks: Hooks, first_post_first: bool
) -> None:
    """The topic's payload names its creator without a staff flag; the topic's first post
    carries it. Remembered from that post (not itself an activity), it reaches the replies,
    so help given to staff is not peer help (engagement's rule), whichever came first."""
    topic = copy.deepcopy(TOPIC_CREATED)
    first = {"post": post(144, 7, "ada", post_number=1, staff=True, admin=True)}
    deliveries = [
        ("topic_created", topic, "topic"),
        ("post_created", first, "post"),
    ]
    for n, (event, payload, kind) in enumerate(
        deliveries if not first_post_first else list(reversed(deliveries))
    ):
        hooks.discourse(event, payload, delivery=f"d-{n}", event_type=kind)
    hooks.discourse("post_created", {"post": post(145, 8, "bob")}, delivery="d-9")
    reply = hooks.activities()[-1]
    assert reply.target is not None
    assert reply.target.thread_author_member_id == "discourse:7"
    assert reply.target.thread_author_is_team_member is True
    assert reply.target.thread_is_question is True  # the topic is tagged `question`


def test_discourse_replies_to_a_members_topic_say_so(hooks: Hooks) -> None:
    hooks.discourse("topic_created", TOPIC_CREATED, delivery="d-1", event_type="topic")
    first = {"post": post(144, 7, "ada", post_number=1)}
    hooks.discourse("post_created", first, delivery="d-2")
    hooks.discourse("post_created", {"post": post(145, 8, "bob")}, delivery="d-3")
    reply = hooks.activities()[-1]
    assert reply.target is not None and reply.target.thread_author_is_team_member is False
    untagged = copy.deepcopy(TOPIC_CREATED)
    untagged["topic"] |= {"id": 63, "tags": ["kafka"]}
    hooks.discourse("topic_created", untagged, delivery="d-5", event_type="topic")
    hooks.discourse("post_created", {"post": post(147, 8, "bob", topic_id=63)}, delivery="d-6")
    assert hooks.activities()[-1].target.thread_is_question is None  # type: ignore[union-attr]
    # a topic whose first post was never seen: not said, so it counts as a member's thread
    other = {"post": post(146, 8, "bob", topic_id=62)}
    hooks.discourse("post_created", other, delivery="d-4")
    assert hooks.activities()[-1].target.thread_author_is_team_member is None  # type: ignore[union-attr]


def test_discourse_a_like_is_a_reaction_to_the_posts_author(hooks: Hooks) -> None:
    like = {
        "like": {
            "post": post(145, 8, "bob"),
            "user": {"id": 9, "username": "cy", "name": "Cy", "avatar_template": "/c.png"},
        }
    }
    assert hooks.discourse("post_liked", like, event_type="like").status_code == 202
    [reaction] = hooks.activities()
    assert (reaction.kind, reaction.actor.member_id) == ("reaction", "discourse:9")
    assert reaction.target is not None
    assert reaction.target.parent_id == "discourse:post:145"
    assert reaction.target.parent_author_member_id == "discourse:8"
    assert reaction.target.thread_id == "discourse:topic:61"
    assert reaction.occurred_at == hooks.clock.now  # a like carries no time of its own


def test_discourse_user_created_is_a_signup_with_a_confirmed_email(hooks: Hooks) -> None:
    unconfirmed = copy.deepcopy(USER_CREATED)
    unconfirmed["user"] |= {"id": 11, "username": "eve", "active": False}
    staged = copy.deepcopy(USER_CREATED)
    staged["user"] |= {"id": 12, "staged": True}
    admin = copy.deepcopy(USER_CREATED)
    admin["user"] |= {"id": 13, "admin": True}

    for n, payload in enumerate((USER_CREATED, unconfirmed, staged, admin)):
        assert hooks.discourse("user_created", payload, delivery=str(n)).status_code in (200, 202)
    dee, eve, boss = hooks.activities()
    assert (dee.kind, dee.actor.member_id, dee.actor.email) == (
        "signup",
        "discourse:10",
        "dee@example.org",
    )
    assert dee.occurred_at == datetime(2026, 1, 4, 8, 0, tzinfo=UTC)
    assert eve.actor.email is None  # not activated: the address is not confirmed
    assert boss.actor.is_team_member
    assert hooks.stats.get("discourse", "user_created", "ignored") == 1  # the staged user


def test_discourse_an_accepted_solution_credits_the_answers_author(hooks: Hooks) -> None:
    hooks.discourse("topic_created", TOPIC_CREATED, delivery="1")
    solved = {"solved": post(145, 8, "bob")}
    response = hooks.discourse("accepted_solution", solved, event_type="solved", delivery="2")
    assert response.status_code == 202, response.text
    _, accepted = hooks.activities()
    assert (accepted.kind, accepted.actor.member_id) == ("answer_accepted", "discourse:8")
    assert accepted.target is not None
    assert accepted.target.thread_author_member_id == "discourse:7"  # from the topic seen
    assert accepted.activity_id == "discourse:solution:145"


def test_discourse_ping_and_other_events_are_acknowledged(hooks: Hooks) -> None:
    body = b'{"ping":"OK"}'  # and no X-Discourse-Event header
    response = hooks.client.post(
        "/v1/webhooks/discourse",
        content=body,
        headers={
            "X-Discourse-Event-Type": "ping",
            "X-Discourse-Event-Id": "1",
            "X-Discourse-Event-Signature": sign_discourse(DISCOURSE_SECRET, body),
        },
    )
    assert response.status_code == 200 and response.json()["event"] == "ping"
    edited = hooks.discourse("post_edited", {"post": post()}, delivery="2")
    assert edited.json()["status"] == "ignored"
    assert hooks.publisher.records == []


def test_discourse_automatic_retries_with_a_new_event_id_keep_the_event_id(hooks: Hooks) -> None:
    """Discourse re-sends a failed delivery as a new web hook event (a new
    X-Discourse-Event-Id): the activity is the post, so its event id does not change."""
    hooks.discourse("post_created", {"post": post()}, delivery="30")
    hooks.discourse("post_created", {"post": post()}, delivery="31")
    first, second = hooks.publisher.records
    assert first.event_id == second.event_id


# ---- Slack -----------------------------------------------------------------------------------


def test_slack_a_channel_message_starts_a_thread(hooks: Hooks) -> None:
    assert hooks.slack(slack_message()).status_code == 202
    [message] = hooks.activities()
    assert (message.kind, message.actor.member_id) == ("post", "slack:U0ADA")
    assert message.activity_id == "slack:message:C0123:1767607200.000100"
    assert message.occurred_at == datetime.fromtimestamp(1767607200.0001, UTC)
    assert message.target is not None
    assert message.target.thread_id == "slack:C0123:1767607200.000100"
    assert message.target.thread_author_member_id == "slack:U0ADA"
    assert message.properties == {"channel": "C0123", "text": "How do I replay a topic?"}


def test_slack_a_thread_reply_answers_the_threads_author(hooks: Hooks) -> None:
    reply = slack_message(
        "Ev2",
        user="U0BOB",
        text="Reset the group.",
        ts="1767607300.000200",
        thread_ts="1767607200.000100",
        parent_user_id="U0ADA",
    )
    assert hooks.slack(reply).status_code == 202
    [answer] = hooks.activities()
    assert (answer.kind, answer.actor.member_id) == ("reply", "slack:U0BOB")
    assert answer.target is not None
    assert answer.target.thread_id == "slack:C0123:1767607200.000100"
    assert answer.target.thread_author_member_id == "slack:U0ADA"
    assert answer.target.parent_author_member_id == "slack:U0ADA"


def test_slack_a_reply_without_parent_user_learns_it_from_the_thread(hooks: Hooks) -> None:
    hooks.slack(slack_message("Ev1"))
    reply = slack_message(
        "Ev2", user="U0BOB", ts="1767607300.000200", thread_ts="1767607200.000100"
    )
    hooks.slack(reply)
    _, answer = hooks.activities()
    assert answer.target is not None and answer.target.thread_author_member_id == "slack:U0ADA"


def test_slack_bots_are_flagged(hooks: Hooks) -> None:
    app_post = slack_message("Ev3", subtype="bot_message", bot_id="B0BOT", ts="1.000001")
    del app_post["event"]["user"]
    app_as_user = slack_message("Ev4", bot_id="B0BOT", user="U0APP", ts="1.000002")
    hooks.slack(app_post)
    hooks.slack(app_as_user)
    by_bot, by_app = hooks.activities()
    assert by_bot.actor.is_bot and by_bot.actor.member_id == "slack:B0BOT"
    assert by_app.actor.is_bot and by_app.actor.member_id == "slack:U0APP"


@pytest.mark.parametrize(
    "event",
    [
        pytest.param({"subtype": "message_changed"}, id="edited"),
        pytest.param({"subtype": "message_deleted"}, id="deleted"),
        pytest.param({"subtype": "channel_join"}, id="join-message"),
        pytest.param({"channel_type": "im"}, id="direct-message"),
    ],
)
def test_slack_messages_that_are_not_contributions(hooks: Hooks, event: dict[str, Any]) -> None:
    response = hooks.slack(slack_message("Ev5", **event))
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert hooks.publisher.records == []


def test_slack_a_reaction_credits_the_messages_author(hooks: Hooks) -> None:
    payload = slack_message("Ev6")
    payload["event"] = {
        "type": "reaction_added",
        "user": "U0CY",
        "reaction": "thumbsup",
        "item_user": "U0BOB",
        "item": {"type": "message", "channel": "C0123", "ts": "1767607300.000200"},
        "event_ts": "1767607400.000300",
    }
    assert hooks.slack(payload).status_code == 202
    [reaction] = hooks.activities()
    assert (reaction.kind, reaction.actor.member_id) == ("reaction", "slack:U0CY")
    assert reaction.target is not None
    assert reaction.target.parent_id == "slack:message:C0123:1767607300.000200"
    assert reaction.target.parent_author_member_id == "slack:U0BOB"
    assert reaction.properties == {"reaction": "thumbsup"}
    assert reaction.occurred_at == datetime.fromtimestamp(1767607400.0003, UTC)


def test_slack_joining_a_channel(hooks: Hooks) -> None:
    payload = slack_message("Ev7")
    payload["event"] = {
        "type": "member_joined_channel",
        "user": "W0DEE",
        "channel": "C0123",
        "channel_type": "C",
        "team": "T0TEAM",
        "inviter": "U0ADA",
    }
    assert hooks.slack(payload).status_code == 202
    [joined] = hooks.activities()
    assert (joined.kind, joined.actor.member_id) == ("channel_joined", "slack:W0DEE")
    assert joined.properties == {"channel": "C0123", "invited_by": "slack:U0ADA"}
    assert joined.occurred_at == datetime.fromtimestamp(1767607200, UTC)  # the envelope's time


def test_slack_team_join_is_a_signup_with_a_confirmed_email(hooks: Hooks) -> None:
    def team_join(event_id: str, **user: Any) -> dict[str, Any]:
        payload = slack_message(event_id)
        payload["event"] = {
            "type": "team_join",
            "user": {
                "id": "U0DEE",
                "team_id": "T0TEAM",
                "name": "dee",
                "real_name": "Dee",
                "is_bot": False,
                "is_admin": False,
                "is_owner": False,
                "profile": {"email": "dee@example.org", "display_name": "dee"},
            }
            | user,
            "event_ts": "1767607500.000400",
        }
        return payload

    hooks.slack(team_join("Ev8", is_email_confirmed=True))
    hooks.slack(team_join("Ev9", id="U0EVE"))
    hooks.slack(team_join("Ev10", id="U0RBT", is_bot=True))
    dee, eve, robot = hooks.activities()
    assert (dee.kind, dee.actor.member_id, dee.actor.handle) == ("signup", "slack:U0DEE", "dee")
    assert dee.actor.email == "dee@example.org"
    assert eve.actor.email is None  # Slack did not say it is confirmed
    assert robot.actor.is_bot


def test_slack_a_delivery_missing_what_its_mapping_needs_is_a_bad_request(hooks: Hooks) -> None:
    payload = slack_message("Ev11")
    del payload["event"]["ts"]
    response = hooks.slack(payload)
    assert response.status_code == 400
    assert response.json()["errors"][0]["pointer"] == "/event/ts"
    no_event_id = slack_message()
    del no_event_id["event_id"]
    assert hooks.slack(no_event_id).status_code == 400


# ---- member ids ------------------------------------------------------------------------------


def test_member_ids_come_from_one_function() -> None:
    assert member_id("github", 583231) == "github:583231"
    assert member_id("discourse", "-1") == "discourse:-1"
    with pytest.raises(ValueError):
        member_id("slack", "U1 with space")


# ---- times in the future ----------------------------------------------------------------------

FAR_FUTURE = "2099-01-01T00:00:00+00:00"


def _clamped_count(source: str) -> float:
    """flywheel_webhook_time_clamped_total{source=...} as Prometheus would scrape it."""
    from prometheus_client.parser import text_string_to_metric_families

    text = metrics.prometheus_text()[1].decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "flywheel_webhook_time_clamped_total"
        and sample.labels.get("source") == source
    )


def test_clamp_future_moves_only_far_future_times_to_the_receipt() -> None:
    received = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    near = activity("m-1", "post", at=received + timedelta(seconds=299))
    far = activity("m-2", "post", at=received + timedelta(seconds=301), properties={"q": True})
    past = activity("m-3", "post", at=received - timedelta(days=3))

    bounded, clamped = clamp_future([near, far, past], received_at=received, max_future_s=300)

    assert clamped == 1
    assert bounded[0] is near and bounded[2] is past
    assert bounded[1].occurred_at == received
    assert bounded[1].properties == {
        "q": True,
        CLAMPED_FROM: (received + timedelta(seconds=301)).isoformat(),
    }
    assert bounded[1].model_copy(update={"occurred_at": far.occurred_at}) != far  # flagged
    ActivityV1.model_validate(bounded[1].model_dump())  # still a valid activity


def test_a_github_time_in_the_future_is_clamped_and_counted(hooks: Hooks) -> None:
    metrics.configure()
    before = _clamped_count("github")
    payload = issue_comment()
    payload["comment"]["created_at"] = "2099-01-01T00:00:00Z"

    assert hooks.github("issue_comment", payload).status_code == 202

    [reply] = hooks.activities()
    assert reply.occurred_at == NOW
    assert reply.properties[CLAMPED_FROM] == FAR_FUTURE
    assert _clamped_count("github") == before + 1


def test_a_discourse_time_in_the_future_is_clamped(hooks: Hooks) -> None:
    body = {"post": post(created_at="2099-01-01T00:00:00.000Z")}
    assert hooks.discourse("post_created", body).status_code == 202

    [reply] = hooks.activities()
    assert reply.occurred_at == NOW
    assert reply.properties[CLAMPED_FROM] == FAR_FUTURE


def test_a_slack_time_in_the_future_is_clamped(hooks: Hooks) -> None:
    future = datetime(2099, 1, 1, tzinfo=UTC).timestamp()
    body = slack_message(ts=f"{future:.6f}", event_ts=f"{future:.6f}")
    assert hooks.slack(body).status_code == 202

    [message] = hooks.activities()
    assert message.occurred_at == NOW
    assert message.properties[CLAMPED_FROM] == FAR_FUTURE


def test_a_slightly_fast_platform_clock_is_left_alone(hooks: Hooks) -> None:
    payload = issue_comment()
    ahead = NOW + timedelta(seconds=60)
    payload["comment"]["created_at"] = ahead.isoformat()

    assert hooks.github("issue_comment", payload).status_code == 202

    [reply] = hooks.activities()
    assert reply.occurred_at == ahead and CLAMPED_FROM not in reply.properties
