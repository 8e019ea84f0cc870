"""Builders for test events, so each test states only what matters to it."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.contracts import ActivityV1, Actor, Target

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
_ids = itertools.count(1)


def activity(
    member_id: str,
    kind: str,
    *,
    at: datetime | None = None,
    day: float = 0,
    source: str = "discourse",
    activity_id: str | None = None,
    anonymous: bool = False,
    team: bool = False,
    bot: bool = False,
    thread_author: str | None = None,
    thread_id: str | None = None,
    properties: dict[str, Any] | None = None,
    in_question: bool | None = None,
) -> ActivityV1:
    """`in_question`: the reply's `target.thread_is_question`; a reply's thread is a question
    unless a test says otherwise (peer help counts only there), other kinds leave it unset."""
    target = None
    if thread_author is not None or thread_id is not None:
        if in_question is None and kind == "reply":
            in_question = True
        target = Target(
            thread_id=thread_id or "t-1",
            thread_author_member_id=thread_author,
            thread_is_question=in_question,
        )
    return ActivityV1(
        activity_id=activity_id or f"a-{next(_ids)}",
        occurred_at=at or T0 + timedelta(days=day),
        source=source,
        kind=kind,
        actor=Actor(member_id=member_id, anonymous=anonymous, is_team_member=team, is_bot=bot),
        target=target,
        properties=properties or {},
    )


def helped_threads(asker: str = "ada", helper: str = "bob") -> list[ActivityV1]:
    """A small community through every stage: both sign up (the helper referred by the
    asker), the asker posts three questions, the helper answers each and has it accepted.
    The asker becomes a member; the helper engaged and, once the clock passes day 6, an
    advocate."""
    return [
        activity(asker, "signup", day=1, source="web"),
        activity(helper, "signup", day=1, source="web", properties={"referred_by": asker}),
        *[activity(asker, "post", day=2 + i / 10, thread_id=f"q-{i}") for i in range(3)],
        *[
            activity(helper, "reply", day=3 + i / 10, thread_id=f"q-{i}", thread_author=asker)
            for i in range(3)
        ],
        *[
            activity(
                helper,
                "answer_accepted",
                day=3.5 + i / 10,
                thread_id=f"q-{i}",
                thread_author=asker,
            )
            for i in range(3)
        ],
    ]
