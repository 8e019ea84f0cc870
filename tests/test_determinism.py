"""The same history gives the same journey, however fast it arrives (issue: event time per
partition and across services).

One generated community (referrals, accepted answers, content, churners and returners) over
more than a year of event time is fed to the three stage services, as real processes on the
real broker, in several ways:

- (burst) the whole log at once, the services started after it;
- (paced) small chunks with pauses while the services run, and a batch size of 37;
- (restart) chunks with pauses, with engagement killed (SIGKILL) mid-way and restarted later;
- (replay) after the burst run, every service replayed from offset 0 (`flywheel replay`'s
  truncate-and-reset) with a batch size of 50.

Every run uses the defaults a deployment uses: an allowed lateness of one hour and the default
rules (no weight set to zero, no capped credit lifted, unlike tests/crashkit.py's crash runs).
The transitions and signals every service emits, ids included, per-member order, and every
service's final state are identical across all of them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from services import registry
from shared.cloudevents import BROADCAST, OutgoingRecord
from shared.kafka import ensure_topics
from tests import crashkit
from tests.conftest import Namespace

pytestmark = pytest.mark.integration

ENV = {  # the defaults, except where history is on simulated time: no wall-clock ticker, and
    # a generated log (and its final tick) may run past today
    "FLYWHEEL_CLOCK_TICK_INTERVAL_S": "0",
    "FLYWHEEL_MAX_FUTURE_S": str(int(crashkit.MAX_FUTURE.total_seconds())),
    "FLYWHEEL_TRANSIENT_RETRY_INITIAL_S": "0.1",
    "FLYWHEEL_TRANSIENT_RETRY_MAX_S": "2",
}


def flush(records: Sequence[OutgoingRecord]) -> OutgoingRecord:
    """A clock tick far after the log on every partition: every deadline and review falls due."""
    return replace(crashkit.flush_tick(records), partition=BROADCAST)


async def namespace_of(stack_ns: Namespace) -> tuple[Namespace, dict[str, str]]:
    ns = Namespace(stack_ns.stack, f"d{uuid.uuid4().hex[:10]}.")
    await ensure_topics(
        ns.stack.kafka_bootstrap, partitions=3, replication_factor=1, prefix=ns.prefix
    )
    urls = {s: await ns.create_database(s) for s in crashkit.STAGES}
    return ns, urls


async def run(
    base: Namespace,
    records: Sequence[OutgoingRecord],
    workdir: Path,
    *,
    name: str,
    chunk: int = 0,
    pause_s: float = 0.0,
    max_records: int = 500,
    kill: str | None = None,
) -> tuple[crashkit.Outcome, dict[str, str], Namespace]:
    """One run in a namespace of its own; returns what it left behind."""
    ns, urls = await namespace_of(base)
    bootstrap = ns.stack.kafka_bootstrap
    env = {**ENV, "FLYWHEEL_CONSUMER_MAX_RECORDS": str(max_records)}
    procs = {
        s: crashkit.ServiceProcess(s, ns.env(urls[s], **env), workdir / f"{name}-{s}.log")
        for s in crashkit.STAGES
    }

    def alive() -> None:
        dead = [s for s, p in procs.items() if not p.alive()]
        assert not dead, f"{name}: {dead} died: {[procs[s].log()[-2000:] for s in dead]}"

    try:
        if not chunk:  # burst: the log is there before any service starts
            await crashkit.publish(bootstrap, ns.prefix, records[:-1])
        for p in procs.values():
            await asyncio.to_thread(p.start)
        if chunk:
            feeding = asyncio.create_task(
                crashkit.publish(bootstrap, ns.prefix, records[:-1], chunk=chunk, pause_s=pause_s)
            )
            if kill is not None:
                deadline = time.monotonic() + 600
                while True:  # a third of the way through: mid-stream
                    if await crashkit.committed(bootstrap, ns.prefix, kill) >= len(records) // 3:
                        break
                    assert time.monotonic() < deadline, f"{kill} made no progress"
                    await asyncio.sleep(0.2)
                procs[kill].kill()
                await asyncio.sleep(2)
                await asyncio.to_thread(procs[kill].start)
            await feeding
        await crashkit.wait_settled(bootstrap, ns.prefix, urls, timeout_s=900, alive=alive)
        await crashkit.publish(bootstrap, ns.prefix, records[-1:])
        await crashkit.wait_settled(bootstrap, ns.prefix, urls, timeout_s=300, alive=alive)
        result = await crashkit.outcome(bootstrap, ns.prefix, urls)
    finally:
        codes = {s: p.terminate()[0] for s, p in procs.items() if p.alive()}
    assert set(codes.values()) <= {0}, codes
    return result, urls, ns


async def replay(
    ns: Namespace, urls: Mapping[str, str], workdir: Path, *, max_records: int
) -> crashkit.Outcome:
    """Every stage service replayed from offset 0 (the operator's truncate-and-reset), then
    run again to the end with another batch size."""
    from ops.replay import reset_and_truncate
    from ops.target import Target

    bootstrap = ns.stack.kafka_bootstrap
    target = Target(
        kafka=bootstrap,
        prefix=ns.prefix,
        database_urls=dict(urls),
        gateway_url=None,
        health_urls={},
        api_key=None,
        timeout_s=30.0,
    )
    for service in crashkit.STAGES:
        spec = registry.spec(service)
        await reset_and_truncate(target, spec, None, list(spec.replay_tables))
    env = {**ENV, "FLYWHEEL_CONSUMER_MAX_RECORDS": str(max_records)}
    procs = {
        s: crashkit.ServiceProcess(s, ns.env(urls[s], **env), workdir / f"replay-{s}.log")
        for s in crashkit.STAGES
    }
    try:
        for p in procs.values():
            await asyncio.to_thread(p.start)
        await crashkit.wait_settled(bootstrap, ns.prefix, urls, timeout_s=900)
        return await crashkit.outcome(bootstrap, ns.prefix, urls)
    finally:
        for p in procs.values():
            if p.alive():
                p.terminate()


async def determinism(base: Namespace, tmp_path: Path, *, people: int, weeks: int) -> None:
    records = crashkit.community_records(people=people, weeks=weeks, seed=23)
    records.append(flush(records))
    owners = crashkit.owners(records)
    report: dict[str, object] = {"activities": len(records) - 1}

    began = time.monotonic()
    burst, burst_urls, burst_ns = await run(base, records, tmp_path, name="burst")
    report["burst s"] = round(time.monotonic() - began, 1)
    emitted = {t: len(burst.ids(t)) for t in burst.events}
    report["emitted"] = emitted
    # the outcome is not trivially empty: every kind of journey event is there
    assert emitted["journey-transitions"] > 100 and emitted["signals.advocacy"] > 5
    assert emitted["signals.support"] > 100 and emitted["member-lifecycle"] > 10
    assert emitted["signals.product"] > 5  # feedback, and advocacy's flags of champions' own
    assert burst.state["advocacy"]["review_clock"], "no champion review ever ran"

    runs = {
        "paced": dict(chunk=300, pause_s=0.05, max_records=37),
        "restart": dict(chunk=1000, pause_s=0.1, kill="engagement"),
    }
    for name, how in runs.items():
        began = time.monotonic()
        other, _, _ = await run(base, records, tmp_path, name=name, **how)  # type: ignore[arg-type]
        report[f"{name} s"] = round(time.monotonic() - began, 1)
        problems = crashkit.differences(burst, other, owners)
        assert not problems, f"{name} differs from burst:\n" + "\n".join(problems)

    began = time.monotonic()
    replayed = await replay(burst_ns, burst_urls, tmp_path, max_records=50)
    report["replay s"] = round(time.monotonic() - began, 1)
    problems = crashkit.differences(burst, replayed, owners)
    assert not problems, "the replay differs:\n" + "\n".join(problems)
    print(f"\ndeterminism: {crashkit.summary(report.items())}")


@pytest.mark.timeout(1800)  # four runs of the whole stack; minutes on 2 cores
async def test_the_same_history_gives_the_same_journey_at_any_pace(
    namespace: Namespace, tmp_path: Path
) -> None:
    await determinism(namespace, tmp_path, people=300, weeks=56)


@pytest.mark.slow
@pytest.mark.timeout(7200)
async def test_the_same_history_at_scale(namespace: Namespace, tmp_path: Path) -> None:
    await determinism(namespace, tmp_path, people=1000, weeks=56)


def test_a_difference_in_rows_holding_arrays_is_reported_not_raised() -> None:
    """PostgreSQL arrays come back as lists (awareness's touchpoint ids): the comparison names
    the differing rows instead of failing on them (a CI run once ended in `unhashable type`)."""
    expected = crashkit.Outcome(state={"awareness": {"people": [("m1", ["a", "b"]), ("m2", [])]}})
    actual = crashkit.Outcome(state={"awareness": {"people": [("m1", ["b", "a"]), ("m2", [])]}})
    problems = crashkit.differences(expected, actual, {})
    assert problems == [
        "awareness.people: 2 rows expected, 2 found;"
        " e.g. missing [('m1', ['a', 'b'])], unexpected [('m1', ['b', 'a'])]"
    ]
    assert crashkit.differences(expected, expected, {}) == []


def test_a_log_written_out_of_order_is_told_apart_from_a_service_fault() -> None:
    """`reordered` names the members whose records the topic holds in another order than the
    test meant to publish them (its first copies; a chunk sent twice is in order)."""
    records = crashkit.community_records(people=20, weeks=2, seed=3)
    by_key: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_key.setdefault(r.key.decode(), []).append(i)
    member, (first, second, *_) = next((k, v) for k, v in by_key.items() if len(v) >= 2)

    def log(order: Sequence[int]) -> list[crashkit.Seen]:
        return [
            crashkit.Seen(0, n, records[i].key.decode(), records[i].event_id, "", ())
            for n, i in enumerate(order)
        ]

    in_order = range(len(records))
    resent = [*in_order, *in_order]  # a chunk sent again after a partial failure
    assert crashkit.reordered(log(resent), records) == []
    swapped = [second if i == first else first if i == second else i for i in in_order]
    assert crashkit.reordered(log(swapped), records) == [member]
