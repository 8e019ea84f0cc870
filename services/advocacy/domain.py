"""Advocacy rules: helping others. Pure functions, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, replace

from shared.contracts import ActivityV1
from shared.journey import Transition

ADVOCATE = "advocate"


@dataclass(frozen=True)
class Advocate:
    member_id: str
    stage: str | None
    accepted_answers: int


def counts(activity: ActivityV1) -> bool:
    return not (activity.actor.is_team_member or activity.actor.is_bot or activity.actor.anonymous)


def accepted_for_someone_else(activity: ActivityV1) -> bool:
    """`answer_accepted` is credited to its actor, the answer's author; helping oneself
    does not count."""
    asker = activity.target.thread_author_member_id if activity.target else None
    return (
        activity.kind == "answer_accepted"
        and asker is not None
        and asker != activity.actor.member_id
    )


def observe(
    member: Advocate | None, activity: ActivityV1
) -> tuple[Advocate | None, list[Transition]]:
    if not counts(activity) or not accepted_for_someone_else(activity):
        return member, []
    if member is None:
        member = Advocate(activity.actor.member_id, None, 0)
    member = replace(member, accepted_answers=member.accepted_answers + 1)
    if member.stage is None:
        t = Transition(
            member.member_id,
            None,
            ADVOCATE,
            "an answer accepted on someone else's question",
            activity.occurred_at,
            (activity.activity_id,),
            score=float(member.accepted_answers),
        )
        return replace(member, stage=ADVOCATE), [t]
    return member, []
