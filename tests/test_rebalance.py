"""Replicas of one stage service share its partitions; a replica joining or leaving mid-stream
loses nothing and doubles nothing: every transition id is published once, and the state equals
a single-replica run over the same log.

The hard case is a replica whose partitions are taken away while it holds a batch: its database
transaction commits, the offset commit after it fails (the group has moved on), and the new owner
reads the same records again. The inbox drops them; the old owner must go on consuming.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from services.engagement.__main__ import SPEC as ENGAGEMENT
from shared.cloudevents import Envelope
from shared.consumer import BatchHandler
from shared.service import ConsumingService
from shared.settings import Settings
from shared.uow import UnitOfWork
from tests import crashkit
from tests.conftest import Namespace, running

pytestmark = pytest.mark.integration

URLS = dict[str, str]


async def until(check: Callable[[], bool | Awaitable[bool]], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        await asyncio.sleep(0.1)


def assigned(service: ConsumingService) -> set[tuple[str, int]]:
    consumer = service.subscriber.consumer
    return {(tp.topic, tp.partition) for tp in consumer.assignment()} if consumer else set()


async def test_replicas_share_the_partitions_and_join_and_leave_mid_stream(
    namespace: Namespace, tmp_path: Path
) -> None:
    """Two engagement processes in one group: the second joins while the log flows, the first
    leaves (SIGTERM) while it still flows. A static member does not leave its group when it
    stops: its partitions pass to the second when its session times out."""
    bootstrap, prefix = namespace.stack.kafka_bootstrap, namespace.prefix
    records = crashkit.community_records(people=400, weeks=14, seed=21)
    records.append(crashkit.flush_tick(records))
    env = crashkit.deterministic_env(
        crashkit.write_rules(tmp_path), FLYWHEEL_CONSUMER_MAX_RECORDS="100"
    )
    expected = await crashkit.undisturbed(
        namespace, records, env, tmp_path, services=("engagement",)
    )

    url = await namespace.create_database("engagement")
    urls = {"engagement": url}
    # two replicas on one host: each needs its own static member name (FLYWHEEL_INSTANCE_ID)
    first, second = (
        crashkit.ServiceProcess(
            "engagement",
            namespace.env(url, **env, FLYWHEEL_INSTANCE_ID=n),
            tmp_path / f"{n}.log",
        )
        for n in ("first", "second")
    )
    body, tick = records[:-1], records[-1]
    third = len(body) // 3
    try:
        await asyncio.to_thread(first.start)
        await crashkit.publish(bootstrap, prefix, body[:third])
        flowing = asyncio.create_task(
            crashkit.publish(bootstrap, prefix, body[third : 2 * third], chunk=200, pause_s=0.25)
        )
        await asyncio.sleep(1.0)
        # ready means it holds partitions (readiness needs an assignment): both share them
        await asyncio.to_thread(second.start)
        first.wait_ready(30)
        await asyncio.sleep(1.5)
        code, _ = await asyncio.to_thread(first.terminate)
        assert code == 0, first.log()[-2000:]
        await flowing
        # the last third arrives after the first replica left: the leave is mid-stream by
        # construction, not by timing (a loaded machine once let the paced publish finish first)
        await crashkit.publish(bootstrap, prefix, body[2 * third :], chunk=200, pause_s=0.05)
        await crashkit.wait_settled(bootstrap, prefix, urls, timeout_s=300)
        await crashkit.publish(bootstrap, prefix, [tick])
        await crashkit.wait_settled(bootstrap, prefix, urls, timeout_s=120)
        actual = await crashkit.outcome(bootstrap, prefix, urls)
    finally:
        for proc in (first, second):
            if proc.alive():
                await asyncio.to_thread(proc.terminate)

    assert "assigned to partitions" in second.log()
    problems = crashkit.differences(expected, actual, crashkit.owners(records))
    assert not problems, "\n".join(problems)
    doubled = {t: actual.redelivered(t) for t in actual.events if actual.redelivered(t)}
    assert not doubled, f"published twice: {doubled}"


def gated(
    build: Callable[[Settings], BatchHandler], entered: asyncio.Event, gate: asyncio.Event
) -> Callable[[Settings], BatchHandler]:
    """The handler, made to wait at `gate` in its first batch, inside the transaction: the
    batch's events are claimed in the inbox, nothing committed yet."""

    def build_handler(settings: Settings) -> BatchHandler:
        inner = build(settings)

        async def handle_batch(uow: UnitOfWork, events: list[Envelope]) -> None:
            if not entered.is_set():
                entered.set()
                await gate.wait()
            await inner(uow, events)

        return handle_batch

    return build_handler


async def test_partitions_revoked_mid_batch_are_redelivered_and_dropped(
    namespace: Namespace, tmp_path: Path
) -> None:
    """Replica A holds a batch (claimed, not committed) when B joins and takes some of its
    partitions. B reads them from the last commit, waits for A's claim, drops what A applied.
    A's offset commit fails; A goes on with the partitions it kept."""
    bootstrap, prefix = namespace.stack.kafka_bootstrap, namespace.prefix
    records = crashkit.community_records(people=150, weeks=10, seed=22)
    records.append(crashkit.flush_tick(records))
    rules = crashkit.write_rules(tmp_path)
    expected = await crashkit.undisturbed(
        namespace, records, crashkit.deterministic_env(rules), tmp_path, services=("engagement",)
    )

    url = await namespace.create_database("engagement")
    settings = namespace.settings(
        url,
        allowed_lateness_s=crashkit.LATENESS.total_seconds(),
        rules_file=rules,
        max_future_s=crashkit.MAX_FUTURE.total_seconds(),
        consumer_max_records=5000,  # A's first batch holds records of every partition
    )
    entered, gate = asyncio.Event(), asyncio.Event()
    a_spec = dataclasses.replace(
        ENGAGEMENT, build_handler=gated(ENGAGEMENT.build_handler, entered, gate)
    )
    await crashkit.publish(bootstrap, prefix, records[:-1])
    async with running(a_spec, settings.model_copy(update={"instance_id": "a"})) as a:
        await until(entered.is_set, "A took its first batch", 30)
        held = assigned(a)
        assert len(held) >= 3
        async with running(ENGAGEMENT, settings.model_copy(update={"instance_id": "b"})) as b:
            await until(lambda: bool(assigned(b)), "B got partitions", 60)
            await until(lambda: assigned(a) < held, "A gave partitions up", 60)
            taken = assigned(b)
            await asyncio.sleep(1.0)  # B reads them again and waits on A's claim
            gate.set()
            assert a.processor is not None and b.processor is not None
            await crashkit.wait_settled(bootstrap, prefix, {"engagement": url}, timeout_s=120)
            await crashkit.publish(bootstrap, prefix, records[-1:])
            await crashkit.wait_settled(bootstrap, prefix, {"engagement": url}, timeout_s=60)
            stats = {
                n: dataclasses.asdict(p.stats) for n, p in (("A", a.processor), ("B", b.processor))
            }
            a_batches = a.processor.stats.batches
            actual = await crashkit.outcome(bootstrap, prefix, {"engagement": url})
            # both still consume: nothing crashed or stalled on the failed commit
            assert a.subscriber.running and b.subscriber.running
            assert all(not t.done() for t in (*_tasks(a), *_tasks(b)))

    print(f"\nA held {sorted(held)}, B took {sorted(taken)}; {stats}")
    assert taken and taken <= held
    dropped = stats["A"]["duplicates"] + stats["B"]["duplicates"]
    assert dropped > 0, "the batch A held was not redelivered: nothing was tested"
    assert a_batches >= 1
    problems = crashkit.differences(expected, actual, crashkit.owners(records))
    assert not problems, "\n".join(problems)
    doubled = {t: actual.redelivered(t) for t in actual.events if actual.redelivered(t)}
    assert not doubled, f"published twice: {doubled}"


def _tasks(service: ConsumingService) -> list[Any]:
    return list(getattr(service.subscriber, "tasks", []))
