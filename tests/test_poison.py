"""Poison in a good stream: every record that can never be applied lands in `<topic>.dlq` with
its reason, original bytes and headers, and where it came from; every good event around it is
applied; the stream never stalls. A handler failing for one event dead-letters that event
alone after `handler_max_attempts`; a transient fault (the database restarting) is retried,
never dead-lettered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from services.engagement.__main__ import SPEC as ENGAGEMENT
from shared.cloudevents import Envelope, OutgoingRecord, encode
from shared.consumer import DLQ_MAX_VALUE_BYTES, BatchHandler
from shared.contracts import ACTIVITY, StageChangedV1
from shared.settings import Settings
from shared.uow import UnitOfWork
from tests.conftest import Namespace, envelopes, read_topic, running
from tests.factories import activity

pytestmark = pytest.mark.integration

CONSUMER_LIMIT = 4096  # FLYWHEEL_MAX_REQUEST_BYTES: the largest record value a service decodes


def good(member: str, n: int) -> OutgoingRecord:
    """An event_talk (weight 8): one of them makes the member engaged."""
    return encode(
        ACTIVITY,
        activity(member, "event_talk", activity_id=f"{member}-{n}", day=n / 100),
        event_id=f"good:{member}-{n}",
        source="/tests/poison",
    )


async def send(
    namespace: Namespace, records: Sequence[tuple[bytes | None, bytes | None, list[Any]]]
) -> list[tuple[int, int]]:
    """(key, value, headers) onto member-activity, in order; their (partition, offset)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=namespace.stack.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        max_request_size=2**20,
    )
    await producer.start()
    try:
        where = []
        for key, value, headers in records:
            meta = await producer.send_and_wait(
                namespace.topic("member-activity"), value, key=key, headers=headers
            )
            where.append((meta.partition, meta.offset))
        return where
    finally:
        await producer.stop()


def poison() -> dict[str, tuple[bytes | None, bytes | None, list[Any], str]]:
    """name -> (key, value, headers, what the dead letter's reason must say)."""
    ok = good("p-0", 0)
    data = json.loads(ok.value)
    headers = list(ok.headers)

    def with_type(type_name: bytes) -> list[Any]:
        return [(k, type_name if k == "ce_type" else v) for k, v in headers]

    no_kind = {k: v for k, v in data.items() if k != "kind"}
    typed = {**data, "actor": {"member_id": 42}, "occurred_at": "yesterday"}
    big = {**data, "properties": {"padding": "x" * 10_000}}
    huge = _near_the_limit(b"p-6", data, headers)
    return {
        "malformed JSON": (b"p-1", b'{"activity_id": "a-1", "kind": ', headers, "Invalid JSON"),
        "unknown version": (
            b"p-2",
            ok.value,
            with_type(b"community.activity.v9"),
            "unknown event type 'community.activity.v9'",
        ),
        "missing field": (b"p-3", json.dumps(no_kind).encode(), headers, "kind: Field required"),
        "wrong types": (b"p-4", json.dumps(typed).encode(), headers, "failed its schema"),
        "oversized": (b"p-5", json.dumps(big).encode(), headers, f"the {CONSUMER_LIMIT} limit"),
        "huge": (b"p-6", huge, headers, f"the {CONSUMER_LIMIT} limit"),
        "no headers": (b"p-7", ok.value, [], "not a CloudEvent 1.0"),
        "tombstone": (b"p-8", None, headers, "tombstone"),
        "bare tombstone": (b"p-9", None, [], "not a CloudEvent 1.0"),
    }


def _near_the_limit(key: bytes, data: dict[str, Any], headers: list[Any]) -> bytes:
    """A record just under the producer's (and the broker's) 1 MiB limit: the headers a dead
    letter adds would take its dead letter over it, unless the dead letter is cut."""
    target = 2**20 - 50
    padding = target - 1000
    for _ in range(5):
        value = json.dumps({**data, "properties": {"padding": "x" * padding}}).encode()
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
        if size == target:
            return value
        padding += target - size
    raise AssertionError("could not size the record")


async def inbox(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        return {r["event_id"] for r in await conn.fetch("SELECT event_id FROM inbox")}
    finally:
        await conn.close()


def settings(namespace: Namespace, url: str, **overrides: Any) -> Settings:
    return namespace.settings(url, max_request_bytes=CONSUMER_LIMIT, **overrides)


async def test_poison_lands_in_the_dlq_and_the_good_stream_goes_on(namespace: Namespace) -> None:
    url = await namespace.create_database("engagement")
    bad = poison()
    # good, poison, good, poison, ...: every poison record has good events on both sides
    mixed: list[tuple[bytes | None, bytes | None, list[Any]]] = []
    goods = []
    for n, (key, value, headers, _) in enumerate(bad.values()):
        record = good(f"g-{n}", n)
        goods.append(record)
        mixed += [(record.key, record.value, record.headers), (key, value, headers)]
    tail = [good(f"g-{n}", n) for n in range(len(bad), len(bad) + 20)]
    goods += tail

    async with running(ENGAGEMENT, settings(namespace, url)):
        where = await send(namespace, mixed)
        await send(namespace, [(r.key, r.value, r.headers) for r in tail])
        dead = await read_topic(namespace, "member-activity.dlq", until=len(bad))
        transitions = await read_topic(namespace, "journey-transitions", until=len(goods))

    # every good event applied, each member engaged once: the stream went on past each poison
    assert await inbox(url) >= {r.event_id for r in goods}
    engaged = [e.data for e in envelopes(transitions)]
    assert sorted(d.member_id for d in engaged if isinstance(d, StageChangedV1)) == sorted(
        r.key.decode() for r in goods
    )

    # every poison record dead-lettered once, with its reason, bytes, headers and origin
    assert len(dead) == len(bad), [dict(r.headers).get("dlq_reason") for r in dead]
    by_key = {r.key: r for r in dead}
    poison_where = where[1::2]
    for (name, (key, value, headers, reason)), (partition, offset) in zip(
        bad.items(), poison_where, strict=True
    ):
        letter = by_key[key]
        meta = {k: v.decode() for k, v in letter.headers}
        assert reason in meta["dlq_reason"], (name, meta["dlq_reason"])
        assert meta["dlq_topic"] == namespace.topic("member-activity")
        assert (int(meta["dlq_partition"]), int(meta["dlq_offset"])) == (partition, offset)
        assert meta["dlq_service"] == "engagement"
        assert list(letter.headers[: len(headers)]) == list(headers), name  # originals first
        if value is None:
            assert letter.value in (None, b"") and meta["dlq_tombstone"] == "true", name
        elif len(value) > DLQ_MAX_VALUE_BYTES:
            assert letter.value == value[:DLQ_MAX_VALUE_BYTES], name
            assert meta["dlq_value_bytes"] == str(len(value))
            assert meta["dlq_value_sha256"] == hashlib.sha256(value).hexdigest()
        else:
            assert letter.value == value, name
    detail = dict(by_key[b"p-4"].headers)["dlq_detail"].decode()  # every schema error
    assert "actor.member_id" in detail and "occurred_at" in detail


def failing(build: Any, failures: dict[str, int], calls: dict[str, int]) -> Any:
    """The service's handler, made to raise whenever a batch holds an event of `failures`
    that has failures left; `calls` counts the attempts that held each such event."""

    def build_handler(settings: Settings) -> BatchHandler:
        inner: BatchHandler = build(settings)

        async def handle_batch(uow: UnitOfWork, events: list[Envelope]) -> None:
            failed = []
            for e in events:
                if e.id in failures:
                    calls[e.id] = calls.get(e.id, 0) + 1
                    if failures[e.id] > 0:
                        failures[e.id] -= 1
                        failed.append(e.id)
            if failed:
                raise RuntimeError(f"handler bug on {', '.join(failed)}")
            await inner(uow, events)

        return handle_batch

    return build_handler


async def test_a_failing_handler_dead_letters_that_event_alone(namespace: Namespace) -> None:
    url = await namespace.create_database("engagement")
    batch = [good(f"h-{n}", n) for n in range(30)]
    broken, flaky = batch[7].event_id, batch[20].event_id
    failures = {broken: 1_000, flaky: 2}  # the flaky one fails twice, then works
    calls: dict[str, int] = {}
    spec = dataclasses.replace(
        ENGAGEMENT, build_handler=failing(ENGAGEMENT.build_handler, failures, calls)
    )
    await send(namespace, [(r.key, r.value, r.headers) for r in batch])  # one batch
    async with running(spec, settings(namespace, url, handler_max_attempts=3)) as service:
        dead = await read_topic(namespace, "member-activity.dlq", until=1)
        transitions = await read_topic(namespace, "journey-transitions", until=len(batch) - 1)
        assert service.processor is not None
        stats = service.processor.stats

    applied = await inbox(url)
    assert broken not in applied
    assert applied == {r.event_id for r in batch} - {broken}  # flaky included
    assert len(dead) == 1
    meta = dict(dead[0].headers)
    assert meta["ce_id"].decode() == broken
    reason = meta["dlq_reason"].decode()
    assert reason == f"handler failed 3 times: RuntimeError: handler bug on {broken}"
    assert "Traceback" in meta["dlq_detail"].decode()
    assert dead[0].value == batch[7].value
    assert calls[broken] == 1 + 3  # in the batch, then alone handler_max_attempts times
    assert calls[flaky] == 3  # failed in the batch and once alone, then applied
    assert stats.dead_lettered == 1
    members = {e.data.member_id for e in envelopes(transitions)}  # type: ignore[attr-defined]
    assert members == {r.key.decode() for r in batch} - {batch[7].key.decode()}


async def test_a_database_restart_is_retried_never_dead_lettered(namespace: Namespace) -> None:
    url = await namespace.create_database("engagement")
    devstack = namespace.stack.devstack
    stream = [good(f"r-{n}", n) for n in range(1500)]
    async with running(ENGAGEMENT, settings(namespace, url)) as service:

        async def flow() -> None:  # keeps coming before, during and after the restart
            for start in range(0, len(stream), 50):
                await send(namespace, [(r.key, r.value, r.headers) for r in stream[start:][:50]])
                await asyncio.sleep(0.05)

        flowing = asyncio.create_task(flow())
        await asyncio.sleep(1.0)
        await asyncio.to_thread(devstack.restart_postgres)
        await flowing
        transitions = await read_topic(
            namespace, "journey-transitions", until=len(stream), timeout_s=120
        )
        assert service.processor is not None
        stats = service.processor.stats
        dead = await read_topic(namespace, "member-activity.dlq", until=0, timeout_s=1)

    assert dead == []
    assert stats.transient_retries > 0, "the restart went unnoticed: nothing was tested"
    assert stats.dead_lettered == 0
    assert await inbox(url) == {r.event_id for r in stream}
    assert len({e.id for e in envelopes(transitions)}) == len(stream)


def dated(member: str, at: datetime) -> OutgoingRecord:
    return encode(
        ACTIVITY,
        activity(member, "event_talk", activity_id=f"{member}-dated", at=at),
        event_id=f"dated:{member}",
        source="/tests/poison",
    )


async def test_an_event_far_ahead_of_its_record_is_dead_lettered(namespace: Namespace) -> None:
    """A producer other than the gateway wrote an activity dated an hour after its record's
    Kafka timestamp (the margin is 300 s): it would move the clock past every deadline."""
    url = await namespace.create_database("engagement")
    now = datetime.now(UTC)
    before, after = good("f-0", 0), good("f-2", 2)
    future = dated("f-1", now + timedelta(hours=1))
    fast_clock = dated("f-3", now + timedelta(seconds=60))  # within the margin: applied
    stream = [before, future, after, fast_clock]

    async with running(ENGAGEMENT, settings(namespace, url, max_future_s=300)):
        where = await send(namespace, [(r.key, r.value, r.headers) for r in stream])
        dead = await read_topic(namespace, "member-activity.dlq", until=1)
        await read_topic(namespace, "journey-transitions", until=3)

    assert await inbox(url) >= {before.event_id, after.event_id, fast_clock.event_id}
    assert future.event_id not in await inbox(url)
    [letter] = dead
    meta = {k: v.decode() for k, v in letter.headers}
    assert meta["ce_id"] == future.event_id
    assert "ahead of the record's Kafka timestamp" in meta["dlq_reason"]
    assert "FLYWHEEL_MAX_FUTURE_S" in meta["dlq_reason"]
    assert (int(meta["dlq_partition"]), int(meta["dlq_offset"])) == where[1]
    assert letter.value == future.value


async def test_a_v1_event_with_fields_added_by_a_newer_producer_is_applied(
    namespace: Namespace,
) -> None:
    """An additive change within v1 (a rolling upgrade: the producer first): the consumer
    ignores the fields it does not know, top level and nested, instead of dead-lettering."""
    url = await namespace.create_database("engagement")
    record = good("x-1", 1)
    data = json.loads(record.value)
    data["channel"] = "forum"
    data["actor"]["pronouns"] = "she/her"
    data["target"] = {"thread_id": "t-1", "thread_tags": ["kafka"]}
    newer = json.dumps(data).encode()

    async with running(ENGAGEMENT, settings(namespace, url)):
        await send(namespace, [(record.key, newer, record.headers)])
        transitions = await read_topic(namespace, "journey-transitions", until=1)
        dead = await read_topic(namespace, "member-activity.dlq", until=0, timeout_s=1)

    assert dead == []
    assert record.event_id in await inbox(url)
    [engaged] = [e.data for e in envelopes(transitions)]
    assert isinstance(engaged, StageChangedV1)
    assert (engaged.member_id, engaged.to_stage) == ("x-1", "engaged")
