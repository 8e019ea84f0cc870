"""Slack Events API deliveries (`event_callback` envelopes) as activities.

A message in a thread (`thread_ts` other than its own `ts`) is a reply to the thread's
author (`parent_user_id`, when Slack gives it); any other message starts a thread. Edits,
deletions, joins announced as messages and direct messages are acknowledged and not
counted. Messages of apps (`bot_id`) are bots. An email is kept only when Slack says it is
confirmed (`is_email_confirmed`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from services.gateway.webhooks.mapping import (
    Delivery,
    Fields,
    Malformed,
    Mapped,
    actor,
    excerpt,
    properties,
    target,
)
from shared.contracts import ActivityV1, Actor
from shared.members import IdentityError, member_id

SOURCE = "slack"
COUNTED_MESSAGE_SUBTYPES = frozenset({None, "thread_broadcast", "file_share", "bot_message"})
PRIVATE_CHANNEL_TYPES = frozenset({"im", "mpim"})


def _member(user_id: str, where: str) -> str:
    try:
        return member_id(SOURCE, user_id)
    except IdentityError as exc:
        raise Malformed(where, str(exc)) from None


def _activity(
    activity_id: str, kind: str, at: datetime, who: Actor, **fields: object
) -> ActivityV1:
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


def _event_time(d: Delivery, envelope: Fields, event: Fields, key: str = "event_ts") -> datetime:
    if event.has(key):
        return event.unix_time(key)
    if envelope.has("event_time"):
        return envelope.unix_time("event_time")
    return d.received_at


def _message(d: Delivery, envelope: Fields, event: Fields) -> Mapped:
    subtype = event.opt_text("subtype")
    if subtype not in COUNTED_MESSAGE_SUBTYPES:
        return Mapped.ignore(f"a message of subtype {subtype}: not a contribution")
    if event.raw("channel_type") in PRIVATE_CHANNEL_TYPES:
        return Mapped.ignore("a direct message, not community activity")
    channel, ts = event.text("channel"), event.text("ts")
    bot_id = event.opt_text("bot_id")
    user_id = event.opt_text("user") or bot_id
    if user_id is None:
        raise Malformed("/event/user", "a message needs a user or a bot_id")
    who = actor(
        _member(user_id, "/event/user"),
        user_id,
        is_bot=bot_id is not None or subtype == "bot_message",
    )
    thread_ts = event.opt_text("thread_ts")
    in_thread = thread_ts is not None and thread_ts != ts
    if in_thread:
        parent_user = event.opt_text("parent_user_id")
        author = _member(parent_user, "/event/parent_user_id") if parent_user else None
        where = target(
            thread_id=f"slack:{channel}:{thread_ts}",
            thread_author=author,
            parent_author=author,
        )
    else:
        where = target(thread_id=f"slack:{channel}:{ts}", thread_author=who.member_id)
    return Mapped(
        [
            _activity(
                f"slack:message:{channel}:{ts}",
                "reply" if in_thread else "post",
                event.unix_time("ts"),
                who,
                target=where,
                properties=properties(channel=channel, text=excerpt(event.opt_text("text"))),
            )
        ]
    )


def _reaction_added(d: Delivery, envelope: Fields, event: Fields) -> Mapped:
    user, reaction = event.text("user"), event.text("reaction")
    item = event.obj("item")
    item_type = item.text("type")
    if item_type == "message":
        piece = f"slack:message:{item.text('channel')}:{item.text('ts')}"
    else:  # file, file_comment
        piece = f"slack:{item_type}:{item.opt_text('file_comment') or item.text('file')}"
    item_user = event.opt_text("item_user")
    return Mapped(
        [
            _activity(
                f"slack:reaction:{piece.removeprefix('slack:')}:{user}:{reaction}",
                "reaction",
                _event_time(d, envelope, event),
                actor(_member(user, "/event/user"), user),
                target=target(
                    parent_id=piece,
                    parent_author=_member(item_user, "/event/item_user") if item_user else None,
                ),
                properties=properties(reaction=reaction),
            )
        ]
    )


def _member_joined_channel(d: Delivery, envelope: Fields, event: Fields) -> Mapped:
    user, channel = event.text("user"), event.text("channel")
    inviter = event.opt_text("inviter")
    return Mapped(
        [
            _activity(
                f"slack:channel_joined:{channel}:{user}:{d.delivery_id}",
                "channel_joined",
                _event_time(d, envelope, event),
                actor(_member(user, "/event/user"), user),
                properties=properties(
                    channel=channel,
                    invited_by=_member(inviter, "/event/inviter") if inviter else None,
                ),
            )
        ]
    )


def _team_join(d: Delivery, envelope: Fields, event: Fields) -> Mapped:
    user = event.obj("user")
    user_id = user.ident("id")
    profile = user.opt_obj("profile")
    handle = user.opt_text("name") or (profile.opt_text("display_name") if profile else None)
    email = profile.opt_text("email") if profile and user.flag("is_email_confirmed") else None
    return Mapped(
        [
            _activity(
                f"slack:user:{user_id}",
                "signup",
                _event_time(d, envelope, event),
                actor(
                    _member(user_id, "/event/user/id"),
                    user_id,
                    handle=handle,
                    email=email,
                    is_bot=user.flag("is_bot"),
                    is_team_member=user.flag("is_admin") or user.flag("is_owner"),
                ),
            )
        ]
    )


_MAPPERS: dict[str, Callable[[Delivery, Fields, Fields], Mapped]] = {
    "message": _message,
    "reaction_added": _reaction_added,
    "member_joined_channel": _member_joined_channel,
    "team_join": _team_join,
}


def map_slack(delivery: Delivery) -> Mapped:
    """The activities of one `event_callback`, or why it has none."""
    mapper = _MAPPERS.get(delivery.event)
    if mapper is None:
        return Mapped.ignore(f"{delivery.name} is not mapped to an activity")
    envelope = Fields.root(delivery.payload)
    return mapper(delivery, envelope, envelope.obj("event"))
