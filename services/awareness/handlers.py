"""Awareness batch handler: one unit of work per batch (the inbox already dropped duplicates).

Merges and erasures (`shared.lifecycle`) cut the batch: activities before one are applied,
then the merge or erasure, then the rest.
"""

from __future__ import annotations

from collections.abc import Collection

from services.awareness import domain, store
from shared import lifecycle
from shared.cloudevents import Envelope, derive_event_id, encode, payloads
from shared.consumer import BatchHandler
from shared.contracts import MEMBER_ACQUIRED, MEMBER_ERASED, PROSPECT_INTENT, ActivityV1
from shared.journey import transition_record
from shared.rules import load_rules
from shared.settings import Settings
from shared.uow import UnitOfWork

SOURCE = "/services/awareness"


def build_handler(settings: Settings) -> BatchHandler:
    rules = load_rules(domain.Rules, "awareness", settings)

    async def merge(uow: UnitOfWork, m: lifecycle.Merge) -> None:
        people = await store.load_people(uow.conn, {m.survivor, m.merged})
        outcome = domain.merge_people(
            people.get(m.survivor), people.get(m.merged), m.survivor, m.merged, m.event_id, rules
        )
        if outcome.person is not None:
            await store.save_people(uow.conn, [outcome.person])
        await store.delete_people(uow.conn, [m.merged])
        await store.move_aliases(uow.conn, m.merged, m.survivor)
        for t in outcome.transitions:
            uow.emit(transition_record("awareness", t))

    async def erase(uow: UnitOfWork, e: lifecycle.Erasure) -> Collection[str]:
        anonymous = await store.erase(uow.conn, e.ids)
        for erased in domain.erasure_cascade(anonymous, e.occurred_at):
            uow.emit(
                encode(
                    MEMBER_ERASED,
                    erased,
                    source=SOURCE,
                    event_id=derive_event_id(MEMBER_ERASED.type, erased.member_id),
                )
            )
        return anonymous

    return lifecycle.with_lifecycle(settings, apply=_apply(rules), merge=merge, erase=erase)


def _apply(rules: domain.Rules) -> BatchHandler:
    """Activities, already read through merges and erasures."""

    async def handle_batch(uow: UnitOfWork, events: list[Envelope]) -> None:
        activities = payloads(events, ActivityV1)
        anonymous = {a.actor.member_id for a in activities if a.actor.anonymous}
        aliases = await store.load_aliases(uow.conn, anonymous)
        wanted = {a.actor.member_id for a in activities} | set(aliases.values())
        wanted |= {
            v
            for a in activities
            if a.kind == "signup" and isinstance(v := a.properties.get("anonymous_id"), str)
        }
        people = await store.load_people(uow.conn, wanted)
        changed: set[str] = set()
        new_aliases: dict[str, str] = {}

        for activity in activities:
            member_id = activity.actor.member_id
            outcome = domain.observe(people.get(member_id), activity, rules)
            if outcome.person is not None and outcome.person != people.get(member_id):
                people[member_id] = outcome.person
                changed.add(member_id)
            # A visitor's history joins its member, whichever of the two arrives first.
            link = None
            if outcome.merge_from:
                link = (outcome.merge_from, member_id)
                aliases[outcome.merge_from] = new_aliases[outcome.merge_from] = member_id
            elif member_id in aliases:
                link = (member_id, aliases[member_id])
            if link and link[0] in people and link[1] in people:
                visitor_id, owner_id = link
                merged = domain.merge_history(people[owner_id], people[visitor_id])
                if merged != people[owner_id]:
                    people[owner_id] = merged
                    changed.add(owner_id)

            for t in outcome.transitions:
                uow.emit(transition_record("awareness", t))
            if outcome.acquired is not None:
                uow.emit(
                    encode(
                        MEMBER_ACQUIRED,
                        outcome.acquired,
                        source=SOURCE,
                        event_id=derive_event_id(MEMBER_ACQUIRED.type, activity.activity_id),
                    )
                )
            if outcome.intent is not None:
                uow.emit(
                    encode(
                        PROSPECT_INTENT,
                        outcome.intent,
                        source=SOURCE,
                        event_id=derive_event_id(PROSPECT_INTENT.type, activity.activity_id),
                    )
                )

        await store.save_people(uow.conn, (people[m] for m in changed))
        await store.save_aliases(uow.conn, new_aliases)

    return handle_batch
