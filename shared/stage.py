"""One shape for every stage service (awareness, engagement, advocacy), written once.

A stage's `handlers.py` holds one thin function per kind of input: the activity batch, a merge
and an erasure. Each takes the unit of work, its input and the `Stage` (rules and settings read
once at start-up); it loads, calls the pure rules of `domain.py`, saves and emits. Everything
around them is here or in `shared.lifecycle`: loading the rules (a bad rules file stops
start-up), cutting the batch at merges and erasures and dispatching each part
(`with_lifecycle`), and emitting with the service's CloudEvents source.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar

from shared.cloudevents import Envelope, encode, source_of
from shared.consumer import BatchHandler
from shared.contracts import Contract, Dimension, EventType
from shared.eventtime import ClockReading
from shared.journey import Transition, transition_record
from shared.lifecycle import Erasure, Merge, with_lifecycle
from shared.rules import load_rules
from shared.settings import Settings
from shared.uow import UnitOfWork

R = TypeVar("R")


@dataclass(frozen=True)
class Stage(Generic[R]):
    """What every handler of a stage is given besides its input."""

    name: Dimension
    """The service, its section of the rules file and the journey dimension it decides."""
    rules: R
    lateness: timedelta
    """How far behind its partition's newest event time an event may arrive and still be on
    time (the service clock is the slowest partition's newest time less this)."""

    @property
    def source(self) -> str:
        return source_of(self.name)

    def emit(self, uow: UnitOfWork, event_type: EventType, data: Contract, event_id: str) -> None:
        """An event of this stage (a signal, an acquired member, an erasure it cascades)."""
        uow.emit(encode(event_type, data, event_id=event_id, source=self.source))

    def emit_transitions(self, uow: UnitOfWork, transitions: Iterable[Transition]) -> None:
        for t in transitions:
            uow.emit(transition_record(self.name, t))


OnActivities = Callable[[UnitOfWork, list[Envelope], Stage[R]], Awaitable[None]]
"""The events between two merges or erasures, already read through them."""
OnMerge = Callable[[UnitOfWork, Merge, Stage[R]], Awaitable[None]]
OnErase = Callable[[UnitOfWork, Erasure, Stage[R]], Awaitable[Collection[str]]]
"""Returns any further ids erased with the member (see `shared.lifecycle.EraseHandler`)."""
OnClock = Callable[[UnitOfWork, ClockReading, Stage[R]], Awaitable[None]]
"""The service clock moved (after every event of the unit of work was applied): whatever falls
due in event time up to `reading.after` is decided now, once, whatever the batching."""


def stage_handler(
    settings: Settings,
    name: Dimension,
    rules_type: type[R],
    *,
    on_activities: OnActivities[R],
    on_merge: OnMerge[R],
    on_erase: OnErase[R],
    on_clock: OnClock[R] | None = None,
) -> BatchHandler:
    """The service's batch handler: rules read once at start-up (a bad rules file stops the
    service before it reads), each part of a batch dispatched to its handler, then the clock's
    move (the runtime calls the handler with no events when only the clock moved)."""
    stage = Stage(
        name=name,
        rules=load_rules(rules_type, name, settings),
        lateness=timedelta(seconds=settings.allowed_lateness_s),
    )

    async def apply(uow: UnitOfWork, events: list[Envelope]) -> None:
        await on_activities(uow, events, stage)

    async def merge(uow: UnitOfWork, m: Merge) -> None:
        await on_merge(uow, m, stage)

    async def erase(uow: UnitOfWork, e: Erasure) -> Collection[str]:
        return await on_erase(uow, e, stage)

    through_lifecycle = with_lifecycle(settings, apply=apply, merge=merge, erase=erase)

    async def handle_batch(uow: UnitOfWork, events: list[Envelope]) -> None:
        if events:
            await through_lifecycle(uow, events)
        if on_clock is not None and uow.clock is not None and uow.clock.advanced:
            await on_clock(uow, uow.clock, stage)

    return handle_batch
