"""What every platform mapper shares: the delivery, the result, and careful field access.

Payloads are platform JSON, not our contracts: a mapper reads only the fields it needs,
through these helpers, and a missing or mistyped one is a `Malformed` naming it by JSON
pointer (answered 400), never a KeyError (a 500). Free text is clipped to the contract's
limits, so a long title or name can not make a valid delivery unmappable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import JsonValue

from services.gateway.http.problems import json_pointer
from shared.contracts import ActivityV1, Actor, Target
from shared.members import IdentityError, member_id

TEXT_EXCERPT_CHARS = 500
"""How much of a post's text travels in `properties.text` (awareness reads it for intent)."""


class Malformed(Exception):
    """A delivery of a mapped event without a field the mapping needs, or of the wrong type."""

    def __init__(self, pointer: str, detail: str) -> None:
        super().__init__(f"{pointer or '/'}: {detail}")
        self.pointer = pointer
        self.detail = detail


@dataclass(frozen=True)
class Delivery:
    """One authenticated delivery, as the mappers see it."""

    source: str
    event: str  # the platform's name of the event (GitHub's X-GitHub-Event, Slack's type)
    action: str | None  # its action or subtype, where it has one
    delivery_id: str
    payload: dict[str, Any]
    received_at: datetime
    base_url: str | None = None  # where the platform's pages are (Discourse)

    @property
    def name(self) -> str:
        """`event.action`: what the statistics count by."""
        return f"{self.event}.{self.action}" if self.action else self.event


@dataclass(frozen=True)
class Mapped:
    """What a delivery becomes: activities, or why there are none."""

    activities: list[ActivityV1] = field(default_factory=list)
    ignored: str | None = None
    thread_starters: dict[str, ThreadStarter] = field(default_factory=dict)
    """What the delivery says about who started threads (thread id -> starter), to remember
    even when it has no activity of its own (Discourse's first post of a topic)."""

    @classmethod
    def ignore(cls, reason: str, thread_starters: dict[str, ThreadStarter] | None = None) -> Mapped:
        return cls([], reason, dict(thread_starters or {}))


@dataclass(frozen=True)
class ThreadStarter:
    """Who started a thread, whether the platform marks them as staff, and whether the
    thread asks a question (None: not said)."""

    member_id: str
    is_staff: bool | None = None
    is_question: bool | None = None


class Fields:
    """Typed access to a JSON object, remembering where it is for error messages."""

    def __init__(self, data: Mapping[str, Any], path: Sequence[str | int] = ()) -> None:
        self.data = data
        self.path = tuple(path)

    @classmethod
    def root(cls, payload: Any) -> Fields:
        if not isinstance(payload, dict):
            raise Malformed("", "the payload must be a JSON object")
        return cls(payload)

    def _where(self, key: str) -> str:
        return json_pointer([*self.path, key])

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str) -> Any:
        return self.data.get(key)

    def obj(self, key: str) -> Fields:
        value = self.data.get(key)
        if not isinstance(value, dict):
            raise Malformed(self._where(key), "expected an object")
        return Fields(value, [*self.path, key])

    def opt_obj(self, key: str) -> Fields | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise Malformed(self._where(key), "expected an object or null")
        return Fields(value, [*self.path, key])

    def ident(self, key: str) -> str:
        """An id: a non-negative or negative integer, or a non-empty string."""
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
            raise Malformed(self._where(key), "expected an id (integer or string)")
        return str(value)

    def opt_ident(self, key: str) -> str | None:
        return None if self.data.get(key) is None else self.ident(key)

    def text(self, key: str) -> str:
        value = self.data.get(key)
        if not isinstance(value, str) or not value:
            raise Malformed(self._where(key), "expected a non-empty string")
        return value

    def opt_text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise Malformed(self._where(key), "expected a string or null")
        return value or None

    def integer(self, key: str) -> int:
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Malformed(self._where(key), "expected an integer")
        return value

    def flag(self, key: str) -> bool:
        """True only for JSON true: absent, null or anything else is false."""
        return self.data.get(key) is True

    def time(self, key: str) -> datetime:
        value = self.data.get(key)
        parsed = parse_time(value)
        if parsed is None:
            raise Malformed(self._where(key), "expected an ISO 8601 time with a zone")
        return parsed

    def opt_time(self, key: str) -> datetime | None:
        return None if self.data.get(key) is None else self.time(key)

    def unix_time(self, key: str) -> datetime:
        """Seconds since the epoch, as a number or a string (Slack's `ts`: "1355517523.000005")."""
        value = self.data.get(key)
        try:
            seconds = float(value) if isinstance(value, int | float | str) else None
        except ValueError:
            seconds = None
        if isinstance(value, bool) or seconds is None or not 0 < seconds < 1e11:
            raise Malformed(self._where(key), "expected a Unix time in seconds")
        return datetime.fromtimestamp(seconds, UTC)

    def member(self, source: str, key: str) -> str:
        """The member id of the platform user id at `key`."""
        try:
            return member_id(source, self.ident(key))
        except IdentityError as exc:
            raise Malformed(self._where(key), str(exc)) from None


CLAMPED_FROM = "occurred_at_clamped_from"
"""The property a clamped activity carries: the time the platform gave, as it gave it."""


def clamp_future(
    activities: Sequence[ActivityV1], *, received_at: datetime, max_future_s: float
) -> tuple[list[ActivityV1], int]:
    """The activities, those dated more than `max_future_s` after their receipt moved back to
    it; and how many were.

    The public API refuses such an activity (the client can fix its clock and send again); a
    platform cannot be asked to resend, and the delivery is otherwise good. So it keeps its
    place at the time we know it had happened by, and says what its platform claimed in
    `properties.occurred_at_clamped_from`, instead of moving every service's event-time clock
    into the future.
    """
    latest = received_at + timedelta(seconds=max_future_s)
    bounded: list[ActivityV1] = []
    for activity in activities:
        if activity.occurred_at <= latest:
            bounded.append(activity)
            continue
        original = activity.occurred_at.astimezone(UTC).isoformat()
        bounded.append(
            activity.model_copy(  # mappers set a handful of properties: far below the 100 allowed
                update={
                    "occurred_at": received_at,
                    "properties": {**activity.properties, CLAMPED_FROM: original},
                }
            )
        )
    return bounded, sum(1 for a, b in zip(activities, bounded, strict=True) if a is not b)


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def clip(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value[:limit] or None


def excerpt(value: str | None) -> str | None:
    return clip(value, TEXT_EXCERPT_CHARS)


def web_url(value: Any) -> str | None:
    """An http(s) URL the contract accepts, or None."""
    if (
        not isinstance(value, str)
        or len(value) > 2000
        or not value.startswith(("http://", "https://"))
    ):
        return None
    return None if any(c.isspace() for c in value) else value


def actor(
    member: str,
    platform_user_id: str,
    *,
    handle: str | None = None,
    email: str | None = None,
    is_bot: bool = False,
    is_team_member: bool = False,
) -> Actor:
    return Actor(
        member_id=member,
        platform_user_id=clip(platform_user_id, 200),
        handle=clip(handle, 200),
        email=clip(email, 320),
        is_bot=is_bot,
        is_team_member=is_team_member,
    )


def target(
    *,
    thread_id: str | None = None,
    thread_title: str | None = None,
    thread_author: str | None = None,
    parent_id: str | None = None,
    parent_author: str | None = None,
    url: Any = None,
    thread_is_question: bool | None = None,
    thread_author_is_team_member: bool | None = None,
) -> Target:
    return Target(
        thread_id=clip(thread_id, 200),
        thread_title=clip(thread_title, 500),
        thread_author_member_id=thread_author,
        parent_id=clip(parent_id, 200),
        parent_author_member_id=parent_author,
        url=web_url(url),
        thread_is_question=thread_is_question,
        thread_author_is_team_member=thread_author_is_team_member,
    )


def properties(**values: Any) -> dict[str, JsonValue]:
    """The properties given (JSON values), without the empty ones."""
    return {k: v for k, v in values.items() if v is not None and v != [] and v != ""}
