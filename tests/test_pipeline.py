"""The consumer's pipeline (issue 13): batch N+1 is decoded while batch N's transaction and
offset commit run, and nothing a batch promises changes. Transactions run one at a time in the
order read; a batch's offsets are committed after its transaction, and only its own; a batch
read before a revocation is dropped unapplied; a failed batch is rewound with the one read
behind it. And `decode_batch` says exactly what `decode` says, record by record.

No broker, no database: a fake consumer and a fake processor record what happens, in order
(tests/test_rebalance.py and tests/test_shutdown.py cover the real thing)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition

from shared.cloudevents import DecodeError, decode, decode_batch, encode
from shared.consumer import Decoded
from shared.contracts import ACTIVITY, ActivityV1
from shared.service import Pipeline


@dataclass
class _Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None = b"m-1"
    value: bytes | None = b"{}"
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int | None = None


class _Consumer:
    def __init__(self, log: list[Any], partitions: set[TopicPartition]) -> None:
        self.log = log
        self.partitions = partitions
        self.more: dict[TopicPartition, list[Any]] = {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.partitions)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await asyncio.sleep(0)
        self.log.append(("commit", {(tp.topic, tp.partition): o for tp, o in offsets.items()}))

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        """The top-up's look for more: records handed in by the test, else nothing."""
        await asyncio.sleep(0)
        given: dict[TopicPartition, list[Any]] = {}
        for tp, records in self.more.items():
            take = records[: max_records - sum(len(r) for r in given.values())]
            if take:
                given[tp] = take
        self.more = {}
        return given

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.log.append(("seek", (tp.topic, tp.partition), offset))

    # what partition_view asks
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.partitions if tp.topic == topic}

    def highwater(self, tp: TopicPartition) -> int | None:
        return None


class _Processor:
    """Decodes by naming the batch; applies when told to (a gate per batch)."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log
        self.gates: dict[int, asyncio.Event] = {}
        self.fail: set[int] = set()
        self.applied: list[list[Any]] = []

    def decode(self, records: Any) -> Decoded:
        self.log.append(("decode", records[0].offset))
        return Decoded([r.offset for r in records], [])  # type: ignore[misc]

    async def apply(self, records: Any, decoded: Decoded, view: Any) -> None:
        first = records[0].offset
        self.applied.append(list(decoded.envelopes))
        self.log.append(("begin", first))
        await self.gates.setdefault(first, asyncio.Event()).wait()
        if first in self.fail:
            raise RuntimeError("the database went away")
        self.log.append(("end", first))


class _Subscriber:
    def __init__(self, consumer: _Consumer) -> None:
        self.consumer = consumer
        self.running = True


def _pipeline(partitions: int = 2) -> tuple[Pipeline, _Processor, list[Any]]:
    log: list[Any] = []
    consumer = _Consumer(log, {TopicPartition("t", p) for p in range(partitions)})
    processor = _Processor(log)
    pipeline = Pipeline(name="svc", group="g", topic_prefix="", overlap=True)
    pipeline.subscriber = _Subscriber(consumer)  # type: ignore[assignment]
    pipeline.processor = lambda: processor  # type: ignore[assignment,return-value]
    return pipeline, processor, log


def _batch(*offsets: tuple[int, int]) -> Any:
    return tuple(_Record("t", p, o) for p, o in offsets)


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_the_next_batch_is_decoded_while_one_commits_and_applied_after_its_offsets() -> None:
    pipeline, processor, log = _pipeline()
    await pipeline.on_batch(_batch((0, 10), (1, 20), (0, 11)))  # returns with it in flight
    await _settle()
    assert log == [("decode", 10), ("begin", 10)]
    second = asyncio.create_task(pipeline.on_batch(_batch((0, 12), (1, 21))))
    await _settle()
    # decoded while the first is still in its transaction; not begun
    assert log == [("decode", 10), ("begin", 10), ("decode", 12)]
    processor.gates[10].set()
    await second
    await _settle()
    assert log[3:] == [
        ("end", 10),
        ("commit", {("t", 0): 12, ("t", 1): 21}),  # its own offsets only, after it
        ("begin", 12),
    ]
    processor.gates[12].set()
    await pipeline.drain()
    assert log[-2:] == [("end", 12), ("commit", {("t", 0): 13, ("t", 1): 22})]


async def test_a_batch_read_before_a_revocation_is_dropped_unapplied() -> None:
    pipeline, processor, log = _pipeline()
    await pipeline.on_batch(_batch((0, 10)))
    second = asyncio.create_task(pipeline.on_batch(_batch((1, 20))))
    await _settle()
    await pipeline.on_partitions_revoked({TopicPartition("t", 1)})  # does not wait for 10
    processor.gates[10].set()
    await second
    await pipeline.drain()
    assert ("begin", 20) not in log
    assert ("commit", {("t", 0): 11}) in log
    assert pipeline.dropped == 1
    assert ("seek", ("t", 1), 20) in log  # read again from there (if the partition is still ours)


async def test_a_failed_batch_and_the_one_behind_it_are_rewound() -> None:
    pipeline, processor, log = _pipeline()
    processor.fail.add(10)
    await pipeline.on_batch(_batch((0, 10), (1, 30)))
    second = asyncio.create_task(pipeline.on_batch(_batch((0, 12), (1, 31), (2, 5))))
    await _settle()
    processor.gates[10].set()
    with pytest.raises(RuntimeError):
        await second
    seeks = {(tp, offset) for kind, tp, *rest in log if kind == "seek" for offset in rest}
    # partition 2 is not ours (assigned 0 and 1): never sought
    assert seeks == {(("t", 0), 10), (("t", 1), 30)}
    assert not [entry for entry in log if entry[0] == "commit"]
    assert ("begin", 12) not in log


async def test_a_closing_consumer_waits_for_the_batch_it_begins() -> None:
    pipeline, processor, log = _pipeline()
    pipeline.closing = True
    processor.gates[10] = asyncio.Event()
    processor.gates[10].set()
    await pipeline.on_batch(_batch((0, 10)))
    assert pipeline.pending is None
    assert log[-1] == ("commit", {("t", 0): 11})


def _activity_record(member: str = "m-1") -> Any:
    from datetime import UTC, datetime

    from shared.contracts import Actor

    data = ActivityV1(
        activity_id="a-1",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        source="web",
        kind="page_view",
        actor=Actor(member_id=member),
    )
    return encode(ACTIVITY, data, event_id="e-1", source="/gateway")


def test_decode_batch_says_what_decode_says_for_every_record() -> None:
    good = _activity_record()
    topic = "p." + good.topic
    extra = good.value[:-1] + b',"colour":"red"}'

    def rec(offset: int, **changes: Any) -> _Record:
        fields = {"key": good.key, "value": good.value, "headers": good.headers, **changes}
        return _Record(
            changes.pop("topic", topic),
            0,
            offset,
            **{k: v for k, v in fields.items() if k != "topic"},
        )

    no_id = [h for h in good.headers if h[0] != "ce_id"]
    records = [
        rec(0),
        rec(1, key=None),
        rec(2, value=None),
        rec(3, value=b"{not json"),
        rec(4, headers=no_id),
        rec(5, topic="p.journey-transitions"),
        rec(6, key=b"\xff"),
        rec(7, value=extra),  # an unknown field: read tolerantly
        rec(8, headers=[*good.headers, ("ce_id", b"\xffz")]),
        rec(9, headers=[("ce_specversion", b"0.3"), *good.headers[1:]]),
        rec(10, value=good.value.replace(b'"page_view"', b'"Page View"')),
    ]

    def one(r: _Record) -> Any:
        try:
            return decode(
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
                key=r.key,
                value=r.value,
                headers=r.headers,
                topic_prefix="p.",
            )
        except DecodeError as exc:
            return ("error", exc.reason, repr(exc.detail))

    batch = [
        ("error", x.reason, repr(x.detail)) if isinstance(x, DecodeError) else x
        for x in decode_batch(records, topic_prefix="p.")
    ]
    assert batch == [one(r) for r in records]
    assert sum(1 for x in batch if isinstance(x, tuple)) == 6
    assert not isinstance(batch[0], tuple) and batch[0].key == "m-1"


async def test_a_batch_takes_in_what_arrives_while_the_previous_one_commits() -> None:
    pipeline, processor, log = _pipeline()
    pipeline.max_records = 4
    await pipeline.on_batch(_batch((0, 10)))
    second = asyncio.create_task(pipeline.on_batch(_batch((0, 11))))
    await _settle()
    consumer = pipeline.subscriber.consumer  # type: ignore[union-attr]
    consumer.more = {TopicPartition("t", 0): list(_batch((0, 12), (0, 13)))}
    await _settle()
    consumer.more = {TopicPartition("t", 1): list(_batch((1, 7), (1, 8)))}  # one too many
    await _settle()
    processor.gates[10].set()
    processor.gates[11] = asyncio.Event()
    processor.gates[11].set()
    await second
    await pipeline.drain()
    assert processor.applied == [[10], [11, 12, 13, 7]]
    assert log[-1] == ("commit", {("t", 0): 14, ("t", 1): 8})  # its own offsets: 8 not read


async def test_without_overlap_a_batch_commits_before_the_handler_returns() -> None:
    pipeline, processor, log = _pipeline()
    pipeline.overlap = False
    processor.gates[10] = asyncio.Event()
    processor.gates[10].set()
    await pipeline.on_batch(_batch((0, 10), (1, 3)))
    assert pipeline.pending is None
    assert log == [
        ("decode", 10),
        ("begin", 10),
        ("end", 10),
        ("commit", {("t", 0): 11, ("t", 1): 4}),
    ]
