"""The gateway's HTTP edge without Kafka or PostgreSQL: bodies are bounded before any route or
key check runs, the server is bounded, and the open endpoints tell nobody about the inside."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from starlette.types import Message

from services.gateway.__main__ import server_config
from services.gateway.bootstrap import create_app
from services.gateway.delivery.routes import router as subscriptions_router
from services.gateway.http import auth
from services.gateway.journey.models import MemberJourney, StageCounts
from shared.cloudevents import OutgoingRecord
from shared.settings import Settings

API_KEY = "edge-tests-key-4f9a1c2e7b"
MIB = 1024 * 1024


class NoPublisher:
    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        raise AssertionError("nothing may be published")


class NoJourney:
    async def member_journey(self, member_id: str) -> MemberJourney | None:
        return None

    async def stage_counts(self) -> StageCounts:
        return StageCounts(members=0, dimensions={})


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_keys": f"edge={API_KEY}:ingest,read,admin",
        "max_request_bytes": MIB,
        "inbound_webhook_max_bytes": 4 * MIB,
        "kafka_bootstrap_servers": "kafka-0.kafka.internal:9093,kafka-1.kafka.internal:9093",
    }
    return Settings(**(values | overrides))


class Probe:
    """Records whether any route or key check ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []


def app_with_subscriptions(
    config: Settings | None = None, readiness: dict[str, str] | None = None
) -> tuple[FastAPI, Probe]:
    probe = Probe()
    problems = readiness or {}

    async def ready() -> dict[str, str]:
        return problems

    app = create_app(
        publisher=NoPublisher(),
        journey=NoJourney(),
        readiness=ready,
        settings=config or settings(),
    )

    def pool() -> None:
        probe.ran.append("subscriptions route")
        return None

    app.include_router(subscriptions_router(pool))
    original = auth._authenticate

    def spy(*args: Any, **kwargs: Any) -> Any:
        probe.ran.append("authentication")
        return original(*args, **kwargs)

    auth._authenticate = spy
    return app, probe


@pytest.fixture(autouse=True)
def _restore_auth() -> Any:
    original = auth._authenticate
    yield
    auth._authenticate = original


async def call(
    app: FastAPI,
    path: str,
    body_chunks: list[bytes],
    headers: dict[str, str],
    *,
    stall: bool = False,
) -> tuple[int, dict[str, Any], int]:
    """One request straight through ASGI; returns (status, body, chunks the app pulled).
    `stall`: the client says more is coming after the last chunk, and sends nothing."""
    pulled = 0
    queue = list(body_chunks)

    async def receive() -> Message:
        nonlocal pulled
        if not queue:
            await asyncio.sleep(3600)  # a client that sends nothing more
        pulled += 1
        chunk = queue.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(queue) or stall}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("203.0.113.9", 50000),
        "server": ("gw", 80),
        "state": {},
    }
    await asyncio.wait_for(app(scope, receive, send), 10)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), pulled


async def test_an_unauthenticated_8_mib_post_is_refused_413_before_it_is_read() -> None:
    app, probe = app_with_subscriptions()
    status, problem, pulled = await call(
        app,
        "/v1/subscriptions",
        [b"x" * MIB] * 8,
        {"content-length": str(8 * MIB), "content-type": "application/json"},
    )
    assert status == 413
    assert problem["type"].endswith("body-too-large")
    assert "FLYWHEEL_MAX_REQUEST_BYTES" in problem["detail"]
    assert pulled == 0  # not a byte read
    assert probe.ran == []  # no key check, no route


async def test_a_chunked_body_is_counted_and_cut_at_the_limit() -> None:
    app, probe = app_with_subscriptions()
    chunks = [b"{" + b" " * (64 * 1024 - 1)] + [b" " * 64 * 1024] * 127  # 8 MiB, no length
    status, problem, pulled = await call(
        app, "/v1/subscriptions", chunks, {"content-type": "application/json"}
    )
    assert status == 413 and problem["status"] == 413
    assert pulled == 17  # 16 chunks fit in 1 MiB; the 17th went over
    assert probe.ran == []


async def test_a_body_within_the_limit_reaches_the_key_check() -> None:
    app, probe = app_with_subscriptions()
    body = json.dumps({"url": "https://crm.example.com/h", "event_types": []}).encode()
    for headers in ({"content-length": str(len(body))}, {}):  # declared, and chunked
        probe.ran.clear()
        status, problem, _ = await call(
            app,
            "/v1/subscriptions",
            [body[:10], body[10:]],
            {"content-type": "application/json", **headers},
        )
        assert status == 401, problem
        assert probe.ran == ["authentication"]


async def test_webhooks_have_their_own_limit() -> None:
    app, _ = app_with_subscriptions()
    two_mib = [b"x" * MIB] * 2
    declared = {"content-length": str(2 * MIB)}
    status, _, _ = await call(app, "/v1/webhooks/github", two_mib, declared)
    assert status != 413  # within FLYWHEEL_INBOUND_WEBHOOK_MAX_BYTES (the route is not here)
    status, _, _ = await call(app, "/v1/activities", two_mib, declared)
    assert status == 413
    status, problem, pulled = await call(
        app, "/v1/webhooks/github", [b"x" * MIB] * 5, {"content-length": str(5 * MIB)}
    )
    assert status == 413 and pulled == 0
    assert "FLYWHEEL_INBOUND_WEBHOOK_MAX_BYTES" in problem["detail"]


async def test_a_body_longer_than_its_declared_length_is_not_handed_on() -> None:
    app, _ = app_with_subscriptions()
    status, _, _ = await call(
        app,
        "/v1/activities",
        [b'{"activity_id":', b" " * 5000],
        {"content-length": "15", "content-type": "application/json", "x-api-key": API_KEY},
    )
    assert status in (400, 422)  # the app never saw the extra bytes as its body


async def exchange(host: str, port: int, pieces: list[bytes]) -> bytes:
    """Send a request a piece at a time, stopping as soon as the server answers."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            try:
                answer = await asyncio.wait_for(reader.read(4096), 0.02)
            except TimeoutError:
                continue
            return answer
        return await asyncio.wait_for(reader.read(4096), 10)
    finally:
        writer.close()


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, uvicorn.Config]]:
    """The gateway app (fakes behind it) under a real uvicorn, configured as in production."""
    app, _ = app_with_subscriptions(
        settings(http_port=0, http_limit_concurrency=50, http_max_header_bytes=8192)
    )
    config = server_config(app, settings(http_port=0, http_max_header_bytes=8192))
    config.log_config = None
    config.lifespan = "off"
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", config
    finally:
        server.should_exit = True
        await task


async def test_the_server_is_bounded_by_settings(served: tuple[str, uvicorn.Config]) -> None:
    url, _config = served
    s = settings(
        http_limit_concurrency=77, http_keep_alive_s=3, http_max_header_bytes=4096, http_port=9
    )
    bounded = server_config(FastAPI(), s)
    assert bounded.limit_concurrency == 77
    assert bounded.timeout_keep_alive == 3
    assert bounded.h11_max_incomplete_event_size == 4096
    assert bounded.http == "h11" and bounded.server_header is False

    host, port = url.removeprefix("http://").split(":")
    # a chunked upload of 8 MiB, unauthenticated: answered 413 once 1 MiB is exceeded
    chunked = [
        b"POST /v1/subscriptions HTTP/1.1\r\nHost: gw\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        *[b"10000\r\n" + b" " * 0x10000 + b"\r\n"] * 128,
    ]
    answer = await exchange(host, int(port), chunked)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"application/problem+json" in answer
    # headers beyond FLYWHEEL_HTTP_MAX_HEADER_BYTES (8 KiB here), arriving a piece at a time
    headers = [
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\n",
        *[f"x-filler-{n}: {'a' * 4000}\r\n".encode() for n in range(8)],
        b"\r\n",
    ]
    answer = await exchange(host, int(port), headers)
    assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), answer[:200]
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/healthz")).status_code == 200


async def test_readyz_names_what_is_not_ready_and_logs_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    detail = "OSError: connect to postgres-0.db.internal:5432 refused"
    app, _ = app_with_subscriptions(readiness={"database": detail})
    caplog.set_level(logging.WARNING)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw") as c:
        response = await c.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "not ready", "problems": {"database": "unavailable"}}
    assert "internal" not in response.text and "OSError" not in response.text
    assert detail in caplog.text


async def test_asyncapi_names_brokers_only_when_configured() -> None:
    for show, expected in ((False, None), (True, 2)):
        app, _ = app_with_subscriptions(settings(asyncapi_show_servers=show))
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            document = (await c.get("/asyncapi.json")).json()
        if expected is None:
            assert "servers" not in document
            assert "kafka.internal" not in json.dumps(document)
        else:
            assert len(document["servers"]) == expected


def test_database_urls_are_not_shown_with_their_password() -> None:
    from shared.postgres import redact

    url = "postgresql://gw:s3cr3t-pw@db.internal:5432/gw?sslmode=require&password=other-pw"
    assert "s3cr3t-pw" not in repr(Settings(database_url=url))
    shown = redact(url)
    assert "s3cr3t-pw" not in shown and "other-pw" not in shown
    assert shown.startswith("postgresql://gw:***@db.internal:5432/gw?")


async def test_a_body_that_trickles_in_is_refused_408_before_any_route() -> None:
    app, probe = app_with_subscriptions(settings(http_body_timeout_s=0.3))
    # one chunk, then the client sends nothing more (the fake receive waits for ever)
    for headers in ({"content-length": "5000"}, {}):
        status, problem, pulled = await call(
            app,
            "/v1/subscriptions",
            [b"{" * 100],
            {"content-type": "application/json", **headers},
            stall=True,
        )
        assert status == 408, problem
        assert "FLYWHEEL_HTTP_BODY_TIMEOUT_S" in problem["detail"]
        assert pulled == 1
        assert probe.ran == []
