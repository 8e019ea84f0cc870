"""The per-batch shortcuts of the consuming path (issue 13) say the same as the per-record
code they replaced: metrics aggregated per batch, and no per-record spans without a tracer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import metrics, telemetry
from shared.cloudevents import Envelope, OutgoingRecord


@dataclass
class _Record:
    key: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    topic: str = "member-activity"
    partition: int = 0
    offset: int = 0
    value: bytes | None = b"{}"
    timestamp: int | None = None


@dataclass
class _Instrument:
    calls: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def add(self, amount: float, attributes: dict[str, Any]) -> None:
        self.calls.append((amount, attributes))

    record = add


def _envelope(event_id: str, type_: str, at: datetime, topic: str = "t") -> Envelope:
    return Envelope(event_id, type_, "/test", at, None, "m-1", topic)  # type: ignore[arg-type]


def test_record_applied_counts_per_type_and_outcome_once_per_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, latency, late = _Instrument(), _Instrument(), _Instrument()
    monkeypatch.setattr(metrics, "EVENTS", events)
    monkeypatch.setattr(metrics, "EVENT_LATENCY", latency)
    monkeypatch.setattr(metrics, "LATE_EVENTS", late)
    now = datetime.now(UTC)
    a = [_envelope(f"a{i}", "activity", now - timedelta(seconds=10 * i)) for i in range(5)]
    tick = _envelope("tick", "tick", now)
    dead = OutgoingRecord("t.dlq", b"", b"", [("ce_type", b"activity")], "d")
    metrics.record_applied(
        "svc", [*a, tick], a[:3], [dead], late=a[:2], clock_only=frozenset({"tick"})
    )
    counted = {(attrs["type"], attrs["outcome"]): n for n, attrs in events.calls}
    assert counted == {
        ("activity", "applied"): 3,
        ("activity", "duplicate"): 2,
        ("tick", "clock"): 1,
        ("activity", "dead_lettered"): 1,
    }
    assert len(events.calls) == 4  # one call per group, not per event
    [(seconds, attrs)] = latency.calls  # one observation: the oldest applied event
    assert attrs == {"service": "svc", "type": "activity"}
    assert 19 < seconds < 60
    assert late.calls == [(2, {"service": "svc", "topic": "t"})]


def test_measuring_batch_observes_each_topics_oldest_record_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumed, delay = _Instrument(), _Instrument()
    monkeypatch.setattr(metrics, "RECORDS_CONSUMED", consumed)
    monkeypatch.setattr(metrics, "CONSUME_DELAY", delay)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    records = [
        _Record(b"k", topic="a", partition=p, offset=o, timestamp=now_ms - 1000 * o)
        for p in (0, 1)
        for o in (5, 30, 7)
    ] + [_Record(b"k", topic="b", offset=3, timestamp=None)]
    state = metrics.ConsumerState()
    with metrics.measuring_batch("svc", records, state):
        pass
    assert sorted((n, attrs["topic"]) for n, attrs in consumed.calls) == [(1, "b"), (6, "a")]
    [(seconds, attrs)] = delay.calls  # topic b has no timestamp: not observed
    assert attrs["topic"] == "a" and 29 < seconds < 60
    assert state.next_offset == {("a", 0): 31, ("a", 1): 31, ("b", 0): 4}


def test_without_a_tracer_each_emitted_event_continues_its_records_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(telemetry, "_recording", lambda: False)
    parent = b"00-" + b"ab" * 16 + b"-" + b"cd" * 8 + b"-01"
    records = [_Record(b"m-1", [("traceparent", parent)]), _Record(b"m-2", [("ce_id", b"x")])]
    with telemetry.consuming("svc", "group", records) as batch:
        assert batch is not None
        stamp = telemetry.emit_stamper()
        traced = stamp(OutgoingRecord("t", b"m-1", b"{}", [], "e1"))
        untraced = stamp(OutgoingRecord("t", b"m-2", b"{}", [], "e2"))
        assert batch.span.get_span_context().span_id == int("cd" * 8, 16)
    assert dict(traced.headers)["traceparent"] == parent
    assert "traceparent" not in dict(untraced.headers)


async def test_without_a_tracer_the_relay_sends_each_record_as_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No span, no context extraction, no attribute dict per record: the stored headers (the
    cause's context, stamped at emit) go as they are, in their order."""
    monkeypatch.setattr(telemetry, "_recording", lambda: False)

    def no_span(*_: object, **__: object) -> None:
        raise AssertionError("a span was started without a tracer")

    monkeypatch.setattr(telemetry.TRACER, "start_span", no_span)
    sent: list[dict[str, object]] = []

    class _Producer:
        async def send(self, topic: str, **kwargs: object) -> str:
            sent.append({"topic": topic, **kwargs})
            return "future"

    parent = b"00-" + b"ab" * 16 + b"-" + b"cd" * 8 + b"-01"
    stored = [("ce_id", b"e1"), ("traceparent", parent), ("ce_type", b"t")]
    future = await telemetry.traced_send(
        _Producer(),  # type: ignore[arg-type]
        "topic-a",
        value=b"{}",
        key=b"m-1",
        headers=stored,
        partition=2,
    )
    assert future == "future"
    assert sent == [
        {"topic": "topic-a", "value": b"{}", "key": b"m-1", "headers": stored, "partition": 2}
    ]


def test_a_keyed_record_goes_where_aiokafkas_partitioner_sends_it() -> None:
    """`partition_by_key` remembers each key's murmur2 hash; the partition must stay the one
    the Java client, librdkafka's murmur2 and aiokafka compute, for any key and any count."""
    from aiokafka.partitioner import DefaultPartitioner

    from shared.kafka import partition_by_key, producer_options
    from shared.settings import Settings

    default = DefaultPartitioner()
    keys = [b"", b"a", "m-\u00e9l\u00e8ve".encode(), *(f"m-{i:07d}".encode() for i in range(500))]
    keys += [f"stackexchange:user:{i * 7919}".encode() for i in range(500)]
    for count in (1, 2, 3, 6, 7, 12, 48):
        partitions = list(range(count))
        for key in keys:
            for _ in range(2):  # computed, then remembered
                assert partition_by_key(key, partitions, partitions) == default(
                    key, partitions, partitions
                ), (key, count)
    assert partition_by_key(None, [0, 1, 2], [1]) == 1  # no key: among the available
    assert partition_by_key(bytearray(b"m-1"), [0, 1, 2], [0, 1, 2]) == default(
        b"m-1", [0, 1, 2], [0, 1, 2]
    )
    assert producer_options(Settings())["partitioner"] is partition_by_key
