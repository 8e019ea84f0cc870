"""SIGTERM mid-stream: a stage service finishes the batch in hand, flushes its outbox, commits
its offsets and exits 0 within FLYWHEEL_SHUTDOWN_GRACE_S; started again, it goes on where it
stopped, with nothing lost and nothing to redeliver.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from services.engagement.__main__ import SPEC as ENGAGEMENT
from shared.service import ConsumingService
from tests import crashkit
from tests.conftest import Namespace

pytestmark = pytest.mark.integration

GRACE_S = 10.0


async def _inbox(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM inbox"))
    finally:
        await conn.close()


async def test_sigterm_mid_stream_stops_cleanly_within_the_grace(
    namespace: Namespace, tmp_path: Path
) -> None:
    stack = namespace.stack
    bootstrap, prefix = stack.kafka_bootstrap, namespace.prefix
    records = crashkit.community_records(people=400, weeks=16, seed=5)
    records.append(crashkit.flush_tick(records))
    env = crashkit.deterministic_env(
        crashkit.write_rules(tmp_path),
        FLYWHEEL_SHUTDOWN_GRACE_S=str(GRACE_S),
        # small batches: ~30 of them, so SIGTERM lands mid-stream (with 2,000 a batch and the
        # next one filled while it commits, the ~9,400 records took too few batches to aim at)
        FLYWHEEL_CONSUMER_MAX_RECORDS="300",
    )
    expected = await crashkit.undisturbed(
        namespace, records, env, tmp_path, services=("engagement",)
    )

    url = await namespace.create_database("engagement")
    urls = {"engagement": url}
    await crashkit.publish(bootstrap, prefix, records[:-1])
    service = crashkit.ServiceProcess(
        "engagement", namespace.env(url, **env), tmp_path / "engagement.log"
    )
    await asyncio.to_thread(service.start)
    # SIGTERM while it works through the backlog, so a batch is in hand
    await crashkit.wait_progress(bootstrap, prefix, "engagement", below=len(records) * 3 // 4)
    code, took = await asyncio.to_thread(service.terminate, GRACE_S * 3)
    first_life = service.log()
    print(f"\nengagement exited {code} {took:.2f} s after SIGTERM (grace {GRACE_S:.0f} s)")
    assert code == 0, first_life[-3000:]
    assert took <= GRACE_S, f"took {took:.1f} s, more than FLYWHEEL_SHUTDOWN_GRACE_S"
    assert "stopped" in first_life and "after SIGTERM" in first_life

    # flushed: nothing left in the outbox; committed: exactly what was applied
    assert await crashkit.outbox_rows(url) == 0
    applied = await _inbox(url)
    assert 0 < applied < len(records) - 1, "SIGTERM came before or after the stream"
    assert await crashkit.committed(bootstrap, prefix, "engagement") == applied

    # started again, it goes on from there: nothing redelivered, nothing lost
    await asyncio.to_thread(service.start)
    try:
        await crashkit.wait_settled(bootstrap, prefix, urls, timeout_s=300)
        await crashkit.publish(bootstrap, prefix, records[-1:])
        await crashkit.wait_settled(bootstrap, prefix, urls, timeout_s=120)
        actual = await crashkit.outcome(bootstrap, prefix, urls)
    finally:
        code, _ = await asyncio.to_thread(service.terminate, GRACE_S * 3)
    assert code == 0
    assert crashkit.duplicates_dropped(service.log()) == 0, "a clean stop left work to redo"
    problems = crashkit.differences(expected, actual, crashkit.owners(records))
    assert not problems, "\n".join(problems)
    assert all(actual.redelivered(t) == 0 for t in actual.events), "an event was sent twice"


async def test_a_clean_stop_disarms_the_watchdog(namespace: Namespace) -> None:
    """In-process (the gateway's lifespan, tests) the interpreter outlives the service: the
    watchdog armed at the signal must not fire after a stop that finished in time."""
    url = await namespace.create_database("engagement")
    service = ConsumingService(ENGAGEMENT, namespace.settings(url, shutdown_grace_s=30.0))
    await service.start_resources()
    await service.broker.start()
    service.on_shutdown_signal()
    await service.broker.stop()
    await service.stop_resources()
    watchdog = service._watchdog
    assert watchdog is not None
    watchdog.join(5)
    assert not watchdog.is_alive(), "the watchdog would end this process"
