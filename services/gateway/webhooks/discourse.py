"""Discourse deliveries (X-Discourse-Event; the body is `{<event type>: <payload>}`).

A topic's first post arrives twice, as `topic_created` and as `post_created` with post number
1: it is counted once, as the topic. Private messages, whispers and moderator actions are
not community activity and are acknowledged without a trace. Discourse's own accounts
(`system`, `discobot`: ids below 1) are bots; staff posts carry `staff`. A user's email is
taken only from an activated account (Discourse activates it when the email is confirmed).

Post payloads do not say who started the topic: the router fills the thread author from the
topics it has seen (`store.thread_authors`), and whether they are staff from the topic's first
post (not an activity: remembered as the starter's flag, since the topic payload's creator has
no staff flag). Activity ids name the Discourse object, because
Discourse's automatic retries of a failed delivery come with a new X-Discourse-Event-Id.
"""

from __future__ import annotations

from collections.abc import Callable

from services.gateway.webhooks.mapping import (
    Delivery,
    Fields,
    Mapped,
    ThreadStarter,
    actor,
    excerpt,
    properties,
    target,
)
from shared.contracts import ActivityV1, Actor

SOURCE = "discourse"
REGULAR_POST = 1


def _person(
    user_id: str,
    member: str,
    handle: str | None,
    *,
    staff: bool = False,
    email: str | None = None,
) -> Actor:
    return actor(
        member,
        user_id,
        handle=handle,
        email=email,
        is_bot=user_id.lstrip("-").isdigit() and int(user_id) < 1,
        is_team_member=staff,
    )


def _post_author(post: Fields) -> Actor:
    return _person(
        post.ident("user_id"),
        post.member(SOURCE, "user_id"),
        post.opt_text("username"),
        staff=post.flag("staff") or post.flag("admin") or post.flag("moderator"),
    )


def _topic_thread(topic_id: str) -> str:
    return f"discourse:topic:{topic_id}"


def _url(d: Delivery, *parts: object) -> str | None:
    if not d.base_url:
        return None
    return d.base_url.rstrip("/") + "/t/" + "/".join(str(p) for p in parts if p is not None)


def _tags(topic: Fields) -> list[str]:
    tags = topic.raw("tags")
    if not isinstance(tags, list):
        return []
    names = [t.get("name") if isinstance(t, dict) else t for t in tags]  # newer: objects
    return [n for n in names if isinstance(n, str) and n]


def _is_private(item: Fields, key: str) -> bool:
    return bool(item.raw(key) == "private_message")


def _activity(activity_id: str, kind: str, at: object, who: Actor, **fields: object) -> ActivityV1:
    return ActivityV1.model_validate(
        {
            "activity_id": activity_id,
            "occurred_at": at,
            "source": SOURCE,
            "kind": kind,
            "actor": who,
            **fields,
        }
    )


def _topic_created(d: Delivery, p: Fields) -> Mapped:
    topic = p.obj("topic")
    if _is_private(topic, "archetype"):
        return Mapped.ignore("a private message, not community activity")
    creator = topic.opt_obj("created_by")
    if creator is not None:
        who = _person(
            creator.ident("id"), creator.member(SOURCE, "id"), creator.opt_text("username")
        )
    else:
        who = _person(topic.ident("user_id"), topic.member(SOURCE, "user_id"), None)
    topic_id = topic.ident("id")
    tags = _tags(topic)
    return Mapped(
        [
            _activity(
                f"discourse:topic:{topic_id}",
                "post",
                topic.time("created_at"),
                who,
                target=target(
                    thread_id=_topic_thread(topic_id),
                    thread_title=topic.opt_text("title"),
                    thread_author=who.member_id,
                    url=_url(d, topic.opt_text("slug"), topic_id),
                ),
                properties=properties(
                    category_id=topic.opt_ident("category_id"),
                    tags=tags,
                    question=True if "question" in {t.lower() for t in tags} else None,
                ),
            )
        ]
    )


def _regular_post(post: Fields) -> str | None:
    """Why a post is not community activity, or None when it is."""
    if _is_private(post, "topic_archetype"):
        return "a private message, not community activity"
    if post.raw("post_type") not in (None, REGULAR_POST):
        return "not a regular post (a whisper, a moderator or a small action)"
    return None


def _post_created(d: Delivery, p: Fields) -> Mapped:
    post = p.obj("post")
    why_not = _regular_post(post)
    if why_not:
        return Mapped.ignore(why_not)
    if post.integer("post_number") == 1:
        # the topic's payload names its creator without the staff flag: this post has it
        author = _post_author(post)
        return Mapped.ignore(
            "the first post of a topic: counted by topic_created",
            {
                _topic_thread(post.ident("topic_id")): ThreadStarter(
                    author.member_id, is_staff=author.is_team_member
                )
            },
        )
    topic_id = post.ident("topic_id")
    replied_to = post.opt_ident("reply_to_post_number")
    return Mapped(
        [
            _activity(
                f"discourse:post:{post.ident('id')}",
                "reply",
                post.time("created_at"),
                _post_author(post),
                target=target(
                    thread_id=_topic_thread(topic_id),
                    thread_title=post.opt_text("topic_title"),
                    parent_id=f"discourse:topic:{topic_id}/{replied_to}" if replied_to else None,
                    url=_url(d, post.opt_text("topic_slug"), topic_id, post.integer("post_number")),
                ),
                properties=properties(
                    category_id=post.opt_ident("category_id"),
                    text=excerpt(post.opt_text("raw")),
                ),
            )
        ]
    )


def _post_liked(d: Delivery, p: Fields) -> Mapped:
    like = p.obj("like")
    post, user = like.obj("post"), like.obj("user")
    why_not = _regular_post(post)
    if why_not:
        return Mapped.ignore(why_not)
    post_id, topic_id = post.ident("id"), post.ident("topic_id")
    return Mapped(
        [
            _activity(
                f"discourse:like:{post_id}:{user.ident('id')}",
                "reaction",
                d.received_at,  # the payload carries the post's times, not the like's
                _person(user.ident("id"), user.member(SOURCE, "id"), user.opt_text("username")),
                target=target(
                    thread_id=_topic_thread(topic_id),
                    thread_title=post.opt_text("topic_title"),
                    parent_id=f"discourse:post:{post_id}",
                    parent_author=post.member(SOURCE, "user_id"),
                    url=_url(d, post.opt_text("topic_slug"), topic_id, post.raw("post_number")),
                ),
                properties=properties(reaction="like"),
            )
        ]
    )


def _user_created(d: Delivery, p: Fields) -> Mapped:
    user = p.obj("user")
    if user.flag("staged"):
        return Mapped.ignore("a staged user (created by an incoming email), not a sign-up")
    who = _person(
        user.ident("id"),
        user.member(SOURCE, "id"),
        user.opt_text("username"),
        staff=user.flag("admin") or user.flag("moderator"),
        email=user.opt_text("email") if user.flag("active") else None,
    )
    return Mapped(
        [
            _activity(
                f"discourse:user:{user.ident('id')}",
                "signup",
                user.opt_time("created_at") or d.received_at,
                who,
            )
        ]
    )


def _accepted_solution(d: Delivery, p: Fields) -> Mapped:
    """The solved plugin: credited to the accepted post's author; the topic's author (the
    asker) is filled in from the topics seen."""
    post = p.obj("solved")
    topic_id = post.ident("topic_id")
    return Mapped(
        [
            _activity(
                f"discourse:solution:{post.ident('id')}",
                "answer_accepted",
                d.received_at,  # the payload carries the post's times, not the acceptance's
                _post_author(post),
                target=target(
                    thread_id=_topic_thread(topic_id),
                    thread_title=post.opt_text("topic_title"),
                    url=_url(d, post.opt_text("topic_slug"), topic_id, post.raw("post_number")),
                ),
            )
        ]
    )


_MAPPERS: dict[str, Callable[[Delivery, Fields], Mapped]] = {
    "topic_created": _topic_created,
    "post_created": _post_created,
    "post_liked": _post_liked,
    "user_created": _user_created,
    "accepted_solution": _accepted_solution,
}


def map_discourse(delivery: Delivery) -> Mapped:
    """The activities of one Discourse delivery, or why it has none."""
    mapper = _MAPPERS.get(delivery.event)
    if mapper is None:
        if delivery.event == "ping":
            return Mapped.ignore("ping: Discourse checks the webhook is set up")
        return Mapped.ignore(f"{delivery.event} is not mapped to an activity")
    return mapper(delivery, Fields.root(delivery.payload))
