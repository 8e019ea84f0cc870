"""The services on a secured Kafka: SASL_SSL (SCRAM-SHA-512), the KRaft StandardAuthorizer
with no access unless an ACL grants it, and the ACLs `flywheel acls` derives from the code.

One secured dev stack (its own broker, CA and SCRAM users, made at test time) runs the four
services, each as its own principal. Activities posted to the gateway come out as journey
transitions; a service principal that writes another's topic, reads outside its grant or uses
another's consumer group is refused by the broker; an erasure sent on the activity topic (by
a principal that may write it) is dead-lettered with the reason and erases nobody.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from ops.acls import describe_acls, required_acls
from shared.cloudevents import derive_event_id, encode, header_map
from shared.contracts import MEMBER_ERASED, MemberErasedV1
from shared.eventtime import clock_tick
from tests.conftest import wait_for_journeys
from tests.factories import T0, activity, helped_threads

pytestmark = pytest.mark.integration

API_KEY = "secured-stack-key-0123456789"
REPO = Path(__file__).resolve().parent.parent
SERVICES = ("gateway", "awareness", "engagement", "advocacy")


@pytest.fixture(scope="module")
def secured() -> Iterator[Any]:
    from devstack.stack import DevStack

    state_dir = Path(tempfile.mkdtemp(prefix="flywheel-test-secure-"))
    state_dir.chmod(0o755)  # the embedded PostgreSQL runs as another user when tests run as root
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FLYWHEEL_API_KEYS", f"secure={API_KEY}:ingest,read,admin")
        env.setenv("FLYWHEEL_CLOCK_TICK_INTERVAL_S", "0")  # simulated time: no wall-clock ticks
        env.setenv("FLYWHEEL_CONSUMER_BATCH_TIMEOUT_MS", "50")
        env.delenv("FLYWHEEL_TOPIC_PREFIX", raising=False)
        stack = DevStack(
            state_dir,
            secure=True,
            with_services=True,
            backend="local",
            kafka_timeout_s=180,
            service_timeout_s=180,
        )
        stack.start()
    try:
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
async def gateway(secured: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=secured.endpoints.gateway_url,
        timeout=30,
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as client:
        yield client


def _as(secured: Any, principal: str) -> dict[str, Any]:
    """aiokafka arguments of a client that logs in as `principal`."""
    return {
        "bootstrap_servers": secured.endpoints.kafka_bootstrap,
        **secured.kafka_security.client_options(principal),
    }


async def test_the_services_run_end_to_end_each_as_its_own_principal(
    secured: Any, gateway: httpx.AsyncClient
) -> None:
    env = secured.service_env("engagement")
    assert env["FLYWHEEL_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["FLYWHEEL_KAFKA_SASL_USERNAME"] == "engagement"

    log = helped_threads()
    body = {"activities": [a.model_dump(mode="json") for a in log]}
    response = await gateway.post("/v1/activities", json=body)
    assert response.status_code == 202, response.text
    # the gateway's clock (off here: simulated time) on every partition, as the gateway's own
    # principal: every clock passes the history, and advocacy credits it in event time
    tick = clock_tick(T0 + timedelta(days=6), clock="tests")
    producer = AIOKafkaProducer(**_as(secured, "gateway"), acks="all")
    await producer.start()
    try:
        for partition in sorted(await producer.partitions_for(tick.topic)):
            await producer.send_and_wait(
                tick.topic, tick.value, key=tick.key, headers=tick.headers, partition=partition
            )
    finally:
        await producer.stop()

    journeys = await wait_for_journeys(
        gateway,
        {
            "ada": {},
            "bob": {"awareness": "member", "engagement": "engaged", "advocacy": "advocate"},
        },
        timeout_s=120,
    )
    bob = journeys["bob"]
    assert bob["stages"]["awareness"]["stage"] == "member"
    assert bob["stages"]["engagement"]["stage"] == "engaged"
    # advocacy credits bob's peer help: engagement's signal reached it on signals.support
    assert bob["stages"]["advocacy"]["stage"] == "advocate"

    # the broker holds exactly the derived ACLs for each service's principal
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**_as(secured, "admin"))
    await admin.start()
    try:
        for service in SERVICES:
            principal = f"User:{service}"
            derived = {
                (a.resource_type, a.resource_name, a.pattern_type, a.operation, a.permission)
                for a in required_acls()
                if a.principal == principal
            }
            assert set(await describe_acls(admin, principal)) == derived
    finally:
        await admin.close()


async def test_a_service_may_not_write_another_services_topic(secured: Any) -> None:
    erasure = _erasure("ada")
    producer = AIOKafkaProducer(**_as(secured, "engagement"), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        # engagement reads member-lifecycle, but only the gateway and awareness write it
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(
                "member-lifecycle", erasure.value, key=erasure.key, headers=erasure.headers
            )
    finally:
        await producer.stop()


async def test_a_service_may_not_read_outside_its_grant(secured: Any) -> None:
    consumer = AIOKafkaConsumer(
        "signals.sales",  # awareness's, for the sales tools
        **_as(secured, "engagement"),
        group_id=None,
        enable_auto_commit=False,
    )
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await consumer.start()
    finally:
        await consumer.stop()


async def test_a_service_may_not_use_another_services_consumer_group(secured: Any) -> None:
    consumer = AIOKafkaConsumer(
        "member-activity",
        **_as(secured, "engagement"),
        group_id="awareness",  # engagement may read the topic, but not as awareness's group
        enable_auto_commit=False,
    )
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await consumer.start()  # joining the group is refused
    finally:
        await consumer.stop()


async def test_a_wrong_password_is_refused(secured: Any, caplog: pytest.LogCaptureFixture) -> None:
    options = _as(secured, "engagement")
    options["sasl_plain_password"] = "not-the-password"
    producer = AIOKafkaProducer(**options, request_timeout_ms=10_000)
    with pytest.raises(KafkaError):  # aiokafka: "Unable to bootstrap", the cause in its log
        await producer.start()
    await producer.stop()
    assert "SaslAuthenticationFailed" in caplog.text
    assert "not-the-password" not in caplog.text


async def test_an_erasure_on_the_activity_topic_is_dead_lettered_and_erases_nobody(
    secured: Any, gateway: httpx.AsyncClient
) -> None:
    response = await gateway.post(
        "/v1/activities",
        json={
            "activities": [activity("cyd", "signup", day=1, source="web").model_dump(mode="json")]
        },
    )
    assert response.status_code == 202, response.text
    await wait_for_journeys(gateway, {"cyd": {"awareness": None}}, timeout_s=120)

    # the gateway's principal may write member-activity: the broker lets this through
    erasure = _erasure("cyd")
    producer = AIOKafkaProducer(**_as(secured, "gateway"), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(
            "member-activity", erasure.value, key=erasure.key, headers=erasure.headers
        )
    finally:
        await producer.stop()

    # every consumer of member-activity dead-letters it, with the reason
    letters = await _dead_letters(secured, "member-activity.dlq", key=b"cyd", want=4)
    by_service = {h["dlq_service"]: h for h in letters}
    assert set(by_service) == {"awareness", "engagement", "advocacy", "gateway"}
    for headers in by_service.values():
        assert headers["ce_type"] == "member.erased.v1"
        assert "not registered for topic 'member-activity'" in headers["dlq_reason"]

    # and cyd is still there
    journey = (await gateway.get("/v1/members/cyd/journey")).json()
    assert journey["stages"]["awareness"]["stage"] == "member"


def _erasure(member: str) -> Any:
    data = MemberErasedV1(member_id=member, occurred_at=datetime.now(UTC))
    return encode(
        MEMBER_ERASED,
        data,
        event_id=derive_event_id(MEMBER_ERASED.type, member, "forged"),
        source="/forged",
    )


async def _dead_letters(
    secured: Any, topic: str, *, key: bytes, want: int, timeout_s: float = 60
) -> list[dict[str, str]]:
    """The headers of the dead letters of `key` on `topic`, read as the admin."""
    consumer = AIOKafkaConsumer(
        topic,
        **_as(secured, "admin"),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[dict[str, str]] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(found) < want and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found += [header_map(r.headers) for r in records if r.key == key]
    finally:
        await consumer.stop()
    return found


async def test_the_cli_runs_as_the_stacks_admin_and_applies_the_acls(secured: Any) -> None:
    """`flywheel` finds the secured stack's admin in endpoints.json; `acls --apply` is
    idempotent (the stack applied them already) and finds nothing to prune."""
    import os
    import sys

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLYWHEEL_KAFKA_", "KAFKA_BOOTSTRAP"))
    }
    env["FLYWHEEL_STATE_DIR"] = str(secured.state_dir)

    async def flywheel(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ops.cli",
            "--timeout",
            "60",
            *args,
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 180)
        return proc.returncode or 0, out.decode(), err.decode()

    code, out, err = await flywheel("acls", "--apply", "--prune")
    assert code == 0, err
    assert f"applied {len(required_acls())} ACL bindings for 4 principals" in out
    assert "deleted" not in out
    code, out, err = await flywheel("topics", "describe")
    assert code == 0, err
    assert "member-activity" in out and "missing" not in out

    # without the admin's credentials the same command is refused by the broker
    env["FLYWHEEL_KAFKA_SECURITY_PROTOCOL"] = "PLAINTEXT"
    code, out, err = await flywheel("topics", "describe")
    assert code == 1 and "error:" in err
