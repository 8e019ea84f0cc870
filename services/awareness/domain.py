"""Awareness rules: discovery, first touch and joining. Pure functions, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from shared.contracts import ActivityV1
from shared.journey import Transition

VISITOR, MEMBER = "visitor", "member"


@dataclass(frozen=True)
class Person:
    member_id: str
    stage: str
    first_seen_at: datetime
    joined_at: datetime | None = None


def counts(activity: ActivityV1) -> bool:
    """Team members and bots never move anyone's stage."""
    return not (activity.actor.is_team_member or activity.actor.is_bot)


def observe(person: Person | None, activity: ActivityV1) -> tuple[Person | None, list[Transition]]:
    """Fold one activity into a person's awareness state."""
    if not counts(activity):
        return person, []
    at = activity.occurred_at
    cause = (activity.activity_id,)

    def move(to: str, reason: str) -> Transition:
        return Transition(
            activity.actor.member_id, person.stage if person else None, to, reason, at, cause
        )

    if activity.kind == "signup":
        if person is not None and person.stage != VISITOR:
            return person, []
        t = move(MEMBER, f"signed up on {activity.source}")
        if person is None:
            return Person(t.member_id, MEMBER, first_seen_at=at, joined_at=at), [t]
        return replace(person, stage=MEMBER, joined_at=at), [t]

    if person is not None:
        return person, []
    if activity.actor.anonymous:
        t = move(VISITOR, f"first touch: {activity.kind} on {activity.source}")
        return Person(t.member_id, VISITOR, first_seen_at=at), [t]
    # A known member whose sign-up predates the log (an import): a member all the same.
    t = move(MEMBER, f"first seen as a member ({activity.kind} on {activity.source})")
    return Person(t.member_id, MEMBER, first_seen_at=at, joined_at=at), [t]
