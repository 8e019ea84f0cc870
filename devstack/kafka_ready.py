"""Waiting until a Kafka broker is usable: any broker the dev stack talks to (its local JVM
broker, a container, or an external one named by KAFKA_BOOTSTRAP_SERVERS).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from devstack.common import StackError


async def broker_listed(bootstrap: str, timeout_s: float) -> bool:
    """True if the cluster's metadata lists at least one broker (so topics can be created)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=max(1000, int(timeout_s * 1000))
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        return bool(cluster.get("brokers"))
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def wait_external_kafka(bootstrap: str, timeout_s: float) -> None:
    """Wait for a broker we did not start (KAFKA_BOOTSTRAP_SERVERS, a container)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await broker_listed(bootstrap, min(5.0, max(deadline - time.monotonic(), 0.5))):
            return
        await asyncio.sleep(0.2)
    raise StackError(f"the Kafka broker at {bootstrap} did not answer within {timeout_s:.0f} s")


async def wait_topics_online(bootstrap: str, topics: list[str], timeout_s: float) -> None:
    """Wait until the leader of every partition of `topics` serves requests.

    CreateTopics returns before leaders are elected, and a restarted broker reloads its logs
    before leading again; metadata may even name a leader a moment before that broker acts as
    one. A first produce in that window fails with NotLeaderForPartition and is retried, so the
    stack waits here instead: leaders in metadata, then a ListOffsets answer from each.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = time.monotonic() + timeout_s
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        while True:
            described = await admin.describe_topics(topics)
            offline = sorted(
                str(t["topic"])
                for t in described
                if t["error_code"] != 0
                or not t["partitions"]
                or any(p["error_code"] != 0 or p["leader"] < 0 for p in t["partitions"])
            )
            if not offline:
                break
            if time.monotonic() >= deadline:
                raise StackError(
                    f"topics without a leader after {timeout_s:.0f} s: {', '.join(offline)}"
                )
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
    partitions = [
        TopicPartition(str(t["topic"]), int(p["partition"]))
        for t in described
        for p in t["partitions"]
    ]
    remaining_ms = max(1000, int((deadline - time.monotonic()) * 1000))
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, request_timeout_ms=remaining_ms, retry_backoff_ms=20
    )
    await consumer.start()
    try:
        await consumer.end_offsets(partitions)  # retried by aiokafka until leaders answer
    except Exception as exc:
        raise StackError(f"topic leaders did not answer within {timeout_s:.0f} s: {exc}") from exc
    finally:
        await asyncio.sleep(0)  # let the consumer's tasks start, or stop() raises CancelledError
        await consumer.stop()


async def warm_group_coordinator(bootstrap: str, timeout_s: float) -> None:
    """Have the broker create `__consumer_offsets` now rather than at the first group join.

    The first FindCoordinator creates that topic; until its partitions have leaders every
    consumer gets GroupCoordinatorNotAvailable and retries, which would land in the first test
    (or the first service start) as a slow, noisy join.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = time.monotonic() + timeout_s
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        while True:
            try:
                await admin.find_coordinator("flywheel-devstack-warmup")
                return
            except Exception as exc:
                if time.monotonic() >= deadline:
                    raise StackError(
                        f"the group coordinator did not come up within {timeout_s:.0f} s: {exc}"
                    ) from exc
                await asyncio.sleep(0.05)
    finally:
        await admin.close()
