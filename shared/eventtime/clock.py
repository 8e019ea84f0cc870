"""A service's event-time clock, from the progress of every partition it reads. Pure, no I/O.

The rule is Flink's (a watermark is the minimum over its inputs, idle inputs excluded) and
Kafka Streams' (stream time per partition, never moving back):

- Each partition of a *data* topic (`member-activity`) has the newest event time read from it,
  data and clock ticks alike; it vouches for `newest - allowed_lateness`.
- Each partition of a topic that carries an upstream service's *watermark* (engagement's on
  `signals.support`, awareness's on `member-lifecycle`) vouches for the newest watermark that
  upstream wrote to it: every event the upstream derived from its input up to that time is
  before it in the partition.
- The service clock is the minimum over every partition of every clock topic. It stands still
  until every partition has vouched for something, and it never moves back.
- A partition of a data topic that this service has read to its log end, and whose log end
  has not moved for `idle_after` of wall-clock time, is *idle*: it does not hold the clock
  back, and it counts again from its next record. A watermark topic is never idle: a stopped
  upstream stops its downstream's clock, because its events may still come.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class ClockTopic:
    """One input topic that moves a service's clock, and how."""

    name: str
    """Logical topic name (no deployment prefix)."""
    watermark_from: str | None = None
    """The upstream service whose in-band watermark events are this topic's progress; None: a
    data topic, whose progress is its newest event time less the allowed lateness."""


@dataclass(frozen=True)
class PartitionProgress:
    """What one partition has vouched for so far (stored per service, shared by replicas)."""

    topic: str
    partition: int
    event_time: datetime | None
    """Newest event time read (data topic) or newest upstream watermark (watermark topic)."""
    caught_up_since: datetime | None = None
    """Wall-clock time since which the partition has been read to a log end that does not move
    (None: it had records to read at the last look)."""


def vouched(progress: PartitionProgress, topic: ClockTopic, lateness: timedelta) -> datetime | None:
    """The event time up to which this partition has delivered everything it will deliver."""
    if progress.event_time is None:
        return None
    if topic.watermark_from is not None:
        return progress.event_time
    return progress.event_time - lateness


def is_idle(
    progress: PartitionProgress | None, topic: ClockTopic, now: datetime, idle_after: timedelta
) -> bool:
    if topic.watermark_from is not None or progress is None:
        return False
    since = progress.caught_up_since
    return since is not None and now - since >= idle_after


def service_clock(
    topics: Iterable[ClockTopic],
    partitions: Mapping[str, int],
    progress: Mapping[tuple[str, int], PartitionProgress],
    *,
    lateness: timedelta,
    now: datetime,
    idle_after: timedelta,
) -> datetime | None:
    """The minimum of what every non-idle partition vouches for; None while a partition that
    is not idle has vouched for nothing yet (or a topic's partition count is not known).

    When every partition is idle the clock is the minimum over all of them: the service has
    read everything there is, and the answer is the one the same log gives at any pace.
    """
    active: list[datetime] = []
    idle: list[datetime] = []
    for topic in topics:
        count = partitions.get(topic.name)
        if not count:
            return None
        for partition in range(count):
            p = progress.get((topic.name, partition))
            value = vouched(p, topic, lateness) if p is not None else None
            if is_idle(p, topic, now, idle_after):
                if value is not None:
                    idle.append(value)
                continue
            if value is None:
                return None
            active.append(value)
    if active:
        return min(active)
    return min(idle) if idle else None


def advance(stored: datetime | None, computed: datetime | None) -> datetime | None:
    """The clock never moves back (a partition leaving idleness can only hold it still)."""
    if computed is None:
        return stored
    if stored is None:
        return computed
    return max(stored, computed)
