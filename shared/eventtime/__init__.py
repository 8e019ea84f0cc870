"""Event time: each service's clock, moved by every partition it reads (`clock`, pure), kept in
its database (`store`), and advanced once per unit of work (`EventClock`).

The stage services judge inactivity and windows against this clock, never against the wall
clock, so the same log gives the same journey at any pace: docs/GUARANTEES.md ("Event time").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from shared.cloudevents import (
    BROADCAST,
    Envelope,
    OutgoingRecord,
    derive_event_id,
    encode,
    source_of,
)
from shared.contracts import CLOCK_TICK, WATERMARK, ClockTickV1, WatermarkV1
from shared.eventtime import store
from shared.eventtime.clock import ClockTopic, advance, service_clock
from shared.postgres import Connection

__all__ = [
    "CLOCK_ONLY_TYPES",
    "ClockReading",
    "ClockTopic",
    "EventClock",
    "PartitionView",
    "clock_tick",
    "is_clock_only",
    "watermark",
]

CLOCK_ONLY_TYPES = frozenset({CLOCK_TICK.type, WATERMARK.type})
"""Events that only move clocks: never claimed in the inbox (their copies on every partition
share one id), never handed to a handler."""


def is_clock_only(envelope: Envelope) -> bool:
    return envelope.type in CLOCK_ONLY_TYPES


def clock_tick(at: datetime, clock: str = "gateway") -> OutgoingRecord:
    """A tick of event time `at` for every partition of member-activity (the relay, or the
    producer, writes one copy per partition): a quiet partition must not hold clocks back."""
    record = encode(
        CLOCK_TICK,
        ClockTickV1(clock=clock, occurred_at=at),
        source=source_of("gateway"),
        event_id=derive_event_id(CLOCK_TICK.type, clock, at.isoformat()),
    )
    return replace(record, partition=BROADCAST)


def watermark(service: str, topic: str, at: datetime) -> OutgoingRecord:
    """`service`'s clock `at`, for every partition of `topic`: written after everything the
    service derived up to `at`, so a downstream clock that reads it can move to `at`."""
    record = encode(
        WATERMARK,
        WatermarkV1(service=service, watermark=at, occurred_at=at),
        event_id=derive_event_id(WATERMARK.type, service, topic, at.isoformat()),
        source=source_of(service),
    )
    return replace(record, topic=topic, partition=BROADCAST)


@dataclass(frozen=True)
class PartitionView:
    """What the consumer knew when the batch was handed over: the partition count of every
    topic read, and whether each assigned partition was read to its log end."""

    partitions: Mapping[str, int] = field(default_factory=dict)
    caught_up: Mapping[tuple[str, int], bool] = field(default_factory=dict)


@dataclass(frozen=True)
class ClockReading:
    """The clock before and after one unit of work, and the events that arrived behind it."""

    before: datetime | None
    after: datetime | None
    late: tuple[Envelope, ...] = ()

    @property
    def advanced(self) -> bool:
        return self.after is not None and (self.before is None or self.after > self.before)


class EventClock:
    """One service's clock. Topic names here are logical (no deployment prefix)."""

    def __init__(
        self,
        topics: Sequence[ClockTopic],
        *,
        lateness: timedelta,
        idle_after: timedelta,
        topic_prefix: str = "",
    ) -> None:
        self.topics = tuple(topics)
        self.lateness = lateness
        self.idle_after = idle_after
        self._prefix = topic_prefix
        self._by_name = {t.name: t for t in self.topics}

    def _logical(self, topic: str) -> str:
        return topic.removeprefix(self._prefix)

    def newest(self, envelopes: Sequence[Envelope]) -> dict[tuple[str, int], datetime]:
        """Per partition, the newest time the batch vouches for: any event on a data topic;
        only the declared upstream's watermarks on a watermark topic."""
        result: dict[tuple[str, int], datetime] = {}
        for e in envelopes:
            topic = self._by_name.get(self._logical(e.topic))
            if topic is None:
                continue
            if topic.watermark_from is None:
                at = e.time
            elif isinstance(e.data, WatermarkV1) and e.data.service == topic.watermark_from:
                at = e.data.watermark
            else:
                continue
            key = (topic.name, e.partition)
            if key not in result or at > result[key]:
                result[key] = at
        return result

    async def observe(
        self,
        conn: Connection,
        envelopes: Sequence[Envelope],
        view: PartitionView,
        now: datetime | None = None,
    ) -> ClockReading:
        """Record the batch's progress, then move the clock as far as every partition allows."""
        now = now or datetime.now(UTC)
        before = await store.stored_clock(conn)
        caught_up = {
            (self._logical(t), p): done
            for (t, p), done in view.caught_up.items()
            if self._logical(t) in self._by_name
        }
        await store.record_progress(conn, self.newest(envelopes), caught_up, now)
        computed = service_clock(
            self.topics,
            {self._logical(t): n for t, n in view.partitions.items()},
            await store.load_progress(conn),
            lateness=self.lateness,
            now=now,
            idle_after=self.idle_after,
        )
        after = advance(before, computed)
        if after is not None and after != before:
            await store.store_clock(conn, after)
        late = tuple(
            e
            for e in envelopes
            if before is not None
            and not is_clock_only(e)
            and self._logical(e.topic) in self._by_name
            and e.time < before
        )
        return ClockReading(before, after, late)
