"""The event-time clock: minimum over partitions, idle partitions, upstream watermarks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from shared.eventtime.clock import (
    ClockTopic,
    PartitionProgress,
    advance,
    service_clock,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 12, 1, tzinfo=UTC)  # wall clock
LATE = timedelta(hours=1)
IDLE = timedelta(seconds=30)
ACTIVITY = ClockTopic("member-activity")
SUPPORT = ClockTopic("signals.support", watermark_from="engagement")


def progress(topic: str, partition: int, hours: float | None, idle_s: float | None = None):
    return PartitionProgress(
        topic,
        partition,
        None if hours is None else T0 + timedelta(hours=hours),
        None if idle_s is None else NOW - timedelta(seconds=idle_s),
    )


def clock(topics, partitions, rows):
    return service_clock(
        topics,
        partitions,
        {(r.topic, r.partition): r for r in rows},
        lateness=LATE,
        now=NOW,
        idle_after=IDLE,
    )


def test_the_clock_is_the_slowest_partition_less_the_lateness() -> None:
    rows = [progress("member-activity", p, h) for p, h in enumerate((10, 3, 7))]
    assert clock([ACTIVITY], {"member-activity": 3}, rows) == T0 + timedelta(hours=2)


def test_a_partition_that_vouched_for_nothing_holds_the_clock() -> None:
    rows = [progress("member-activity", 0, 10), progress("member-activity", 1, 10)]
    assert clock([ACTIVITY], {"member-activity": 3}, rows) is None
    assert clock([ACTIVITY], {}, rows) is None  # partition count unknown: no clock


def test_an_idle_partition_does_not_hold_the_clock_back() -> None:
    rows = [
        progress("member-activity", 0, 30),
        progress("member-activity", 1, 3, idle_s=31),  # read to its end, still for 31 s
        progress("member-activity", 2, None, idle_s=60),  # never had a record
    ]
    assert clock([ACTIVITY], {"member-activity": 3}, rows) == T0 + timedelta(hours=29)


def test_a_partition_caught_up_for_less_than_idle_after_still_counts() -> None:
    rows = [progress("member-activity", 0, 30), progress("member-activity", 1, 3, idle_s=5)]
    assert clock([ACTIVITY], {"member-activity": 2}, rows) == T0 + timedelta(hours=2)


def test_when_every_partition_is_idle_the_clock_is_their_minimum() -> None:
    rows = [progress("member-activity", p, h, idle_s=99) for p, h in enumerate((10, 3))]
    assert clock([ACTIVITY], {"member-activity": 2}, rows) == T0 + timedelta(hours=2)


def test_an_upstream_watermark_counts_as_is_and_is_never_idle() -> None:
    rows = [
        progress("member-activity", 0, 50),
        progress("signals.support", 0, 20, idle_s=3600),  # upstream stopped: we wait for it
        progress("signals.support", 1, 40),
    ]
    got = clock([ACTIVITY, SUPPORT], {"member-activity": 1, "signals.support": 2}, rows)
    assert got == T0 + timedelta(hours=20)


def test_the_clock_never_moves_back() -> None:
    assert advance(T0, T0 - timedelta(days=1)) == T0
    assert advance(T0, None) == T0
    assert advance(None, T0) == T0
    assert advance(T0, T0 + timedelta(days=1)) == T0 + timedelta(days=1)


@given(
    st.lists(
        st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=20),
        min_size=1,
        max_size=6,
    ),
    st.randoms(use_true_random=False),
)
def test_any_interleaving_of_partitions_ends_at_the_same_clock_and_never_passes_a_record(
    streams: list[list[int]], rnd
) -> None:
    """Read the partitions in any interleaving: the clock never passes a record still to come
    on any partition by more than the lateness allows (when each partition is in time order),
    and every interleaving ends at the same clock."""
    streams = [sorted(s) for s in streams]
    order = [p for p, s in enumerate(streams) for _ in s]
    rnd.shuffle(order)
    positions = [0] * len(streams)
    newest: dict[int, int] = {}
    stored = None
    for p in order:
        newest[p] = streams[p][positions[p]]
        positions[p] += 1
        rows = [progress("member-activity", q, h) for q, h in newest.items()]
        stored = advance(stored, clock([ACTIVITY], {"member-activity": len(streams)}, rows))
        if stored is not None:
            for q, s in enumerate(streams):
                for h in s[positions[q] :]:
                    assert T0 + timedelta(hours=h) >= stored  # nothing still to come is late
    final = min(max(s) for s in streams)
    assert stored == T0 + timedelta(hours=final) - LATE
