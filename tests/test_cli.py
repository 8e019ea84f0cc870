"""The operator CLI against the real broker and PostgreSQL, run as an operator runs it: a
process with the deployment's environment (`python -m ops.cli ...`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import uvicorn

from services.advocacy.__main__ import SPEC as ADVOCACY
from services.awareness.__main__ import SPEC as AWARENESS
from services.engagement.__main__ import SPEC as ENGAGEMENT
from services.gateway import flywheel
from services.gateway.bootstrap import SPEC as GATEWAY
from shared.cloudevents import OutgoingRecord, encode
from shared.contracts import MEMBER_ERASED, MemberErasedV1
from shared.kafka import consumer_lag
from tests import crashkit
from tests.conftest import (
    REPO,
    Namespace,
    publish,
    publish_activities,
    publish_tick,
    read_topic,
    running,
)
from tests.factories import T0, activity

pytestmark = pytest.mark.integration

API_KEY = "cli-test-key-0123456789abcdef"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def cli(env: dict[str, str], *args: str, timeout_s: float = 60) -> Result:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops.cli",
        *args,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return Result(proc.returncode, stdout.decode(), stderr.decode())


def _one_line_error(result: Result, *needles: str) -> None:
    assert result.code == 1, result
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
async def world(
    namespace: Namespace, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, str]]:
    """Databases for the four services and the CLI's environment pointing at them."""
    urls = {s: await namespace.create_database(s) for s in ("awareness", "gateway")}
    env = namespace.env(urls["awareness"])
    env.update(
        {
            "FLYWHEEL_STATE_DIR": str(tmp_path_factory.mktemp("no-stack")),
            "FLYWHEEL_AWARENESS_DATABASE_URL": urls["awareness"],
            "FLYWHEEL_GATEWAY_DATABASE_URL": urls["gateway"],
            "FLYWHEEL_API_KEY": API_KEY,
            "COLUMNS": "250",
        }
    )
    yield env


async def _count(url: str, sql: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def test_status_topics_and_dead_letters(namespace: Namespace, world: dict[str, str]) -> None:
    env = world
    signups = [activity(f"cli-{i}", "signup", day=1, source="web") for i in range(3)]
    poison = OutgoingRecord("member-activity", b"cli-9", b"{not json", [("x-origin", b"t")], "p")
    async with running(AWARENESS, namespace.settings(env["FLYWHEEL_AWARENESS_DATABASE_URL"])):
        await publish_activities(namespace, signups)
        await publish(namespace, [poison])
        await read_topic(namespace, "journey-transitions", until=3)
        [letter] = await read_topic(namespace, "member-activity.dlq", until=1)
        await asyncio.sleep(0.5)  # the batch's offsets are committed after its transaction

        status = await cli(env, "status")
        assert status.code == 0, status
        row = next(line for line in status.stdout.splitlines() if "awareness" in line)
        cells = [c.strip() for c in row.strip("│ ").split("│")]
        # service, ready, lag, outbox, oldest, dead letters, watermark, last applied
        assert cells[0] == "awareness" and cells[2] == "0" and cells[3] == "0", row
        assert cells[5] == "1", row  # the poison record, failed by awareness
        assert cells[7] != "-", row  # something was applied
        assert "engagement: no database URL" in status.stdout

        described = await cli(env, "topics", "describe")
        assert described.code == 0, described
        activity_row = next(
            line for line in described.stdout.splitlines() if "│ member-activity " in line
        )
        assert "│ 3 " in activity_row and "forever" in activity_row, activity_row

        listed = await cli(env, "dlq", "list", "member-activity")
        assert listed.code == 0, listed
        assert "not a CloudEvent" in listed.stdout and "awareness" in listed.stdout
        assert "1 dead letter(s)" in listed.stdout

        shown = await cli(
            env, "dlq", "show", "member-activity", str(letter.partition), str(letter.offset)
        )
        assert shown.code == 0, shown
        assert "dlq_reason: not a CloudEvent" in shown.stdout
        assert "x-origin: t" in shown.stdout and "{not json" in shown.stdout

        redriven = await cli(
            env,
            "dlq",
            "redrive",
            "member-activity",
            "--partition",
            str(letter.partition),
            "--offset",
            str(letter.offset),
            "--yes",
        )
        assert redriven.code == 0, redriven
        assert "redriven 1 record(s) to member-activity" in redriven.stdout
        records = await read_topic(namespace, "member-activity", until=5)
        again = [r for r in records if r.value == b"{not json"]
        assert len(again) == 2
        # the original headers, no dlq_*; a trace context (the relay's, in the same trace as
        # the original's) is carried on when tracing is on
        headers = {k: v for k, v in again[-1].headers if k not in ("traceparent", "tracestate")}
        assert headers == {"x-origin": b"t"}
        assert again[-1].key == b"cli-9"


async def test_replay_refuses_a_running_service_then_rebuilds_it(
    namespace: Namespace, world: dict[str, str]
) -> None:
    env = world
    url = env["FLYWHEEL_AWARENESS_DATABASE_URL"]
    settings = namespace.settings(url)
    signups = [activity(f"rp-{i}", "signup", day=1, source="web") for i in range(4)]
    async with running(AWARENESS, settings):
        await publish_activities(namespace, signups)
        await read_topic(namespace, "journey-transitions", until=4)
        await asyncio.sleep(0.5)
        refused = await cli(env, "replay", "awareness", "--from-beginning", "--yes")
        # it waits for members of stopped replicas to expire (static membership), then refuses
        assert refused.code == 1 and "Traceback" not in refused.stderr, refused
        waited, error = [line for line in refused.stderr.splitlines() if line.strip()]
        assert "waiting up to" in waited, waited
        assert error.startswith("error: awareness is running"), error
        assert "stop every replica first" in error
    people = await _count(url, "SELECT count(*) FROM people")
    assert people == 4

    # stopped: reset and truncate, then watch the restarted service catch up
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops.cli",
        "replay",
        "awareness",
        "--from-beginning",
        "--yes",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert b"TRUNCATE" in first and b"4 record(s) to read again" in first, first
    assert await _count(url, "SELECT count(*) FROM people") == 0
    assert await _count(url, "SELECT count(*) FROM inbox") == 0
    assert await _count(url, "SELECT count(*) FROM schema_migrations") > 0
    async with running(AWARENESS, settings):
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (stdout, stderr)
    assert b"4/4 records" in stdout, stdout
    assert await _count(url, "SELECT count(*) FROM people") == 4

    # the same transitions again, with the same ids: a consumer drops them
    transitions = await read_topic(namespace, "journey-transitions", until=8)
    ids = [dict(r.headers)["ce_id"] for r in transitions]
    assert len(ids) == 8 and len(set(ids)) == 4

    bad = await cli(env, "replay", "awareness")
    assert bad.code == 2 and "exactly one of" in bad.stderr


@contextlib.asynccontextmanager
async def _gateway(namespace: Namespace, url: str) -> AsyncIterator[str]:
    from services.gateway.bootstrap import build_app

    port = _free_port()
    app = build_app(
        namespace.settings(url, clock_tick_interval_s=0, api_keys=f"cli={API_KEY}:read,ingest")
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "the gateway did not start"
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_member_show_and_one_line_errors(namespace: Namespace, world: dict[str, str]) -> None:
    env = world
    async with (
        running(AWARENESS, namespace.settings(env["FLYWHEEL_AWARENESS_DATABASE_URL"])),
        _gateway(namespace, env["FLYWHEEL_GATEWAY_DATABASE_URL"]) as gateway_url,
    ):
        env = {**env, "FLYWHEEL_GATEWAY_URL": gateway_url}
        await publish_activities(namespace, [activity("cli-ada", "signup", day=1, source="web")])
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            shown = await cli(env, "member", "show", "cli-ada")
            if shown.code == 0 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.3)
        assert shown.code == 0, shown
        assert "awareness" in shown.stdout and "member" in shown.stdout
        assert "cli-ada" in shown.stdout

        missing = await cli(env, "member", "show", "nobody")
        _one_line_error(missing, "404")

    closed = f"127.0.0.1:{_free_port()}"
    _one_line_error(
        await cli({**env, "FLYWHEEL_GATEWAY_URL": f"http://{closed}"}, "member", "show", "x"),
        "gateway",
        "unreachable",
    )
    _one_line_error(
        await cli({**env, "KAFKA_BOOTSTRAP_SERVERS": closed}, "--timeout", "3", "status"),
        "Kafka",
        closed,
    )
    _one_line_error(
        await cli(
            {**env, "FLYWHEEL_AWARENESS_DATABASE_URL": f"postgresql://x@{closed}/x"},
            "replay",
            "awareness",
            "--from-beginning",
            "--yes",
        ),
        "PostgreSQL of awareness",
        "unreachable",
    )


# --- replaying the gateway keeps what no topic holds ------------------------------------------

REBUILT = {
    "journey_transitions": "SELECT event_id, member_id, dimension, from_stage, to_stage, reason,"
    " score, occurred_at, caused_by FROM journey_transitions ORDER BY event_id",
    "member_stages": "SELECT member_id, dimension, stage, since, score, event_id"
    " FROM member_stages ORDER BY member_id, dimension",
    "flywheel_acquisitions": "SELECT * FROM flywheel_acquisitions ORDER BY member_id",
    "flywheel_peer_help": "SELECT * FROM flywheel_peer_help ORDER BY event_id",
    "flywheel_questions": "SELECT * FROM flywheel_questions ORDER BY activity_id",
    "flywheel_churn_risk": "SELECT * FROM flywheel_churn_risk ORDER BY event_id",
}
"""The gateway's read model (what the topics rebuild), without arrival order and times."""

KEPT = {
    "identities": "SELECT platform, platform_user_id, member_id, linked_by FROM identities",
    "identity_emails": "SELECT email, member_id FROM identity_emails",
    "blocked_identities": "SELECT identity_hash FROM blocked_identities",
    "outbound_subscriptions": "SELECT id, url, event_types, secret FROM outbound_subscriptions",
    "outbound_deliveries": "SELECT id, subscription_id, event_id, status FROM outbound_deliveries",
    "outbound_delivery_attempts": "SELECT delivery_id, attempt, outcome"
    " FROM outbound_delivery_attempts",
    "webhook_deliveries": "SELECT source, delivery_id, activity_ids FROM webhook_deliveries",
    "outbox": "SELECT event_id, topic, value FROM outbox",
}
"""What only the gateway's database holds: configuration, identities, delivery logs, and
events not yet published."""


async def _rows(url: str, queries: dict[str, str]) -> dict[str, list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(url)
    try:
        return {name: [tuple(r) for r in await conn.fetch(sql)] for name, sql in queries.items()}
    finally:
        await conn.close()


async def _report(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        return (await flywheel.flywheel_report(conn, None, None)).model_dump()
    finally:
        await conn.close()


async def _configure(url: str, unsent: OutgoingRecord) -> None:
    """An operator's link, an erased person's blocked identity, a subscription with its
    secret and a delivery log, a webhook redelivery record, and an event not yet published."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO identities (platform, platform_user_id, member_id, linked_by)"
            " VALUES ('github', '4242', 'ada', 'operator');"
            "INSERT INTO identity_emails (email, member_id) VALUES ('ada@example.org', 'ada');"
            "INSERT INTO blocked_identities (identity_hash, blocked_at)"
            " VALUES ('sha256:erased-person', now());"
            "INSERT INTO outbound_subscriptions (id, url, event_types, secret)"
            " VALUES ('crm', 'https://crm.example.org/hook', '{journey.stage_changed.v1}',"
            " 'whsec_c2VjcmV0');"
            "INSERT INTO outbound_deliveries (id, subscription_id, event_id, event_type,"
            " member_key, event_time, body, status, attempts)"
            " VALUES (1, 'crm', 'e-1', 'journey.stage_changed.v1', 'ada', now(), '{}',"
            " 'delivered', 1);"
            "INSERT INTO outbound_delivery_attempts (delivery_id, attempt, attempted_at,"
            " status_code, latency_ms, outcome) VALUES (1, 1, now(), 204, 12.5, 'delivered');"
            "INSERT INTO webhook_deliveries (source, delivery_id, event, activity_ids)"
            " VALUES ('github', 'd-1', 'issues.opened', '{github:issue:1}')"
        )
        await conn.execute(
            "INSERT INTO outbox (event_id, topic, key, value, header_names, header_values)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            unsent.event_id,
            unsent.topic,
            unsent.key,
            unsent.value,
            [n for n, _ in unsent.headers],
            [v for _, v in unsent.headers],
        )
    finally:
        await conn.close()


async def _gateway_settled(namespace: Namespace, url: str, timeout_s: float = 120) -> None:
    """Until the read model's group committed every record and its outbox is empty."""
    topics = [namespace.topic(t.name) for t in GATEWAY.consumes]
    group = namespace.prefix + GATEWAY.consumer_group
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        lag = sum((await consumer_lag(namespace.stack.kafka_bootstrap, group, topics)).values())
        if lag == 0 and await _count(url, "SELECT count(*) FROM outbox") == 0:
            return
        assert asyncio.get_running_loop().time() < deadline, f"gateway lag {lag}"
        await asyncio.sleep(0.3)


async def test_replaying_the_gateway_rebuilds_its_read_model_and_keeps_the_rest(
    namespace: Namespace, world: dict[str, str]
) -> None:
    urls = {s: await namespace.create_database(s) for s in ("engagement", "advocacy")}
    urls |= {
        "awareness": world["FLYWHEEL_AWARENESS_DATABASE_URL"],
        "gateway": world["FLYWHEEL_GATEWAY_DATABASE_URL"],
    }
    log = [
        activity("anon-1", "page_view", anonymous=True, day=0, source="web"),
        activity("ada", "signup", day=1, source="web", properties={"anonymous_id": "anon-1"}),
        activity("bob", "signup", day=2, source="web", properties={"referred_by": "ada"}),
        activity("bob", "post", day=3, thread_id="q-1", properties={"question": True}),
        activity("ada", "reply", day=4, thread_id="q-1", thread_author="bob"),
        activity("ada", "answer_accepted", day=4.5, thread_id="q-1", thread_author="bob"),
        activity("ada", "event_talk", day=5),
        activity("bob", "event_talk", day=5),
        activity("anon-9", "page_view", day=40, anonymous=True, source="web"),
    ]
    async with (
        running(AWARENESS, namespace.settings(urls["awareness"])),
        running(ENGAGEMENT, namespace.settings(urls["engagement"])),
        running(ADVOCACY, namespace.settings(urls["advocacy"])),
        running(GATEWAY, namespace.settings(urls["gateway"])),
    ):
        await publish_activities(namespace, log)
        await publish_tick(namespace, T0 + timedelta(days=40))  # every clock: bob at risk
        await crashkit.wait_settled(
            namespace.stack.kafka_bootstrap,
            namespace.prefix,
            {s: urls[s] for s in crashkit.STAGES},
            timeout_s=120,
        )
        await _gateway_settled(namespace, urls["gateway"])
    before = await _rows(urls["gateway"], REBUILT)
    report = await _report(urls["gateway"])
    assert before["journey_transitions"] and before["flywheel_peer_help"], before
    assert report["churn_risk_signals"] and report["new_members_via_referral"], report

    erasure = encode(
        MEMBER_ERASED,
        MemberErasedV1(member_id="zed", occurred_at=T0),
        event_id="erase-zed",
        source="/gateway",
    )
    await _configure(urls["gateway"], erasure)
    kept = await _rows(urls["gateway"], KEPT)
    assert all(kept.values()), kept
    published_before = await read_topic(namespace, "member-lifecycle", until=10**6, timeout_s=3)

    replayed = await cli(world, "replay", "gateway", "--from-beginning", "--yes", "--no-watch")
    assert replayed.code == 0, replayed
    assert "TRUNCATE" in replayed.stdout and "outbox" not in replayed.stdout, replayed.stdout
    assert await _rows(urls["gateway"], KEPT) == kept  # nothing of it touched
    assert not any((await _rows(urls["gateway"], REBUILT)).values())  # the read model is gone

    async with running(GATEWAY, namespace.settings(urls["gateway"])):
        await _gateway_settled(namespace, urls["gateway"])
        lifecycle = await read_topic(namespace, "member-lifecycle", until=len(published_before) + 1)

    assert await _rows(urls["gateway"], REBUILT) == before
    assert await _report(urls["gateway"]) == report
    after = await _rows(urls["gateway"], KEPT)
    assert after == {**kept, "outbox": []}  # the unsent erasure went out, the rest stayed
    published = [dict(r.headers)["ce_id"] for r in lifecycle]
    assert published.count(b"erase-zed") == 1
