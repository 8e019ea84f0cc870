"""Engagement rules: participation. Pure functions, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from shared.contracts import ActivityV1
from shared.journey import Transition

ENGAGED = "engaged"
PARTICIPATION_KINDS = frozenset({"post", "reply"})


@dataclass(frozen=True)
class Participant:
    member_id: str
    stage: str | None
    contributions: int
    last_active_at: datetime


def counts(activity: ActivityV1) -> bool:
    return not (activity.actor.is_team_member or activity.actor.is_bot or activity.actor.anonymous)


def observe(
    member: Participant | None, activity: ActivityV1
) -> tuple[Participant | None, list[Transition]]:
    if not counts(activity):
        return member, []
    at = activity.occurred_at
    if member is None:
        member = Participant(activity.actor.member_id, None, 0, at)
    participated = activity.kind in PARTICIPATION_KINDS
    member = replace(
        member,
        contributions=member.contributions + participated,
        last_active_at=max(member.last_active_at, at),
    )
    if participated and member.stage is None:
        t = Transition(
            member.member_id,
            None,
            ENGAGED,
            f"first {activity.kind} on {activity.source}",
            at,
            (activity.activity_id,),
            score=float(member.contributions),
        )
        return replace(member, stage=ENGAGED), [t]
    return member, []
