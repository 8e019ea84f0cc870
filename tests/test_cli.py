"""The operator CLI against the real broker and PostgreSQL, run as an operator runs it: a
process with the deployment's environment (`python -m ops.cli ...`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
import uvicorn

from services.awareness.__main__ import SPEC as AWARENESS
from shared.cloudevents import OutgoingRecord
from tests.conftest import REPO, Namespace, publish, publish_activities, read_topic, running
from tests.factories import activity

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
        _one_line_error(refused, "awareness is running", "stop every replica first")
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
