"""One trace from the HTTP request to the read model, over the real broker and PostgreSQL.

The gateway app and the three stage services run in this process, with an in-memory span
exporter: one POSTed sign-up must show as a single trace going HTTP -> gateway publish ->
each stage service's record span -> awareness's batch and its SQL -> the outbox relay's
publish of the transition -> the gateway read model's record span, each a child of the last.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.advocacy.__main__ import SPEC as ADVOCACY
from services.awareness.__main__ import SPEC as AWARENESS
from services.engagement.__main__ import SPEC as ENGAGEMENT
from services.gateway.bootstrap import build_app
from shared import telemetry
from shared.cloudevents import OutgoingRecord, encode
from shared.contracts import ACTIVITY
from tests.conftest import Namespace, running
from tests.factories import activity

pytestmark = pytest.mark.integration
pytest.importorskip("opentelemetry.instrumentation.asyncpg", reason="declared dependency missing")
pytest.importorskip("opentelemetry.instrumentation.fastapi", reason="declared dependency missing")

API_KEY = "tracing-test-key-0123456789"
API_KEYS = f"tests={API_KEY}:ingest,read,admin"  # the gateway refuses calls without a key
AUTH = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider (installed once: OpenTelemetry allows one), exporting
    to memory for this module."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(sampler=telemetry.quiet_sampler())
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.instrument_asyncpg()
    yield exporter
    exporter.shutdown()


def _service(span: ReadableSpan) -> str:
    return str((span.attributes or {}).get("flywheel.service", ""))


def _one(spans: list[ReadableSpan], what: str, **match: Any) -> ReadableSpan:
    found = [
        s
        for s in spans
        if all(
            (getattr(s, k) if k in ("name", "kind") else (s.attributes or {}).get(k)) == v
            for k, v in match.items()
        )
    ]
    assert found, f"no {what} span among {sorted({s.name for s in spans})}"
    return found[0]


def _parent(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> ReadableSpan | None:
    return by_id.get(span.parent.span_id) if span.parent is not None else None


async def test_one_trace_from_http_through_every_hop(
    namespace: Namespace, spans: InMemorySpanExporter
) -> None:
    urls = {
        name: await namespace.create_database(name)
        for name in ("awareness", "engagement", "advocacy", "gateway")
    }
    app = build_app(namespace.settings(urls["gateway"], clock_tick_interval_s=0, api_keys=API_KEYS))
    signup = activity("tr-ada", "signup", day=1, source="web")
    async with (
        running(AWARENESS, namespace.settings(urls["awareness"])),
        running(ENGAGEMENT, namespace.settings(urls["engagement"])),
        running(ADVOCACY, namespace.settings(urls["advocacy"])),
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway", headers=AUTH
        ) as client,
    ):
        spans.clear()
        response = await client.post("/v1/activities", json=signup.model_dump(mode="json"))
        assert response.status_code == 202, response.text
        deadline = asyncio.get_running_loop().time() + 30
        while (await client.get("/v1/members/tr-ada/journey")).status_code != 200:
            assert asyncio.get_running_loop().time() < deadline, "journey never projected"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)  # the read model's batch span ends after its commit

    finished = list(spans.get_finished_spans())
    by_id = {s.context.span_id: s for s in finished}
    http = _one(finished, "HTTP server", name="POST /v1/activities", kind=SpanKind.SERVER)
    trace_id = http.context.trace_id
    in_trace = [s for s in finished if s.context.trace_id == trace_id]

    def ancestors(span: ReadableSpan) -> list[ReadableSpan]:
        chain: list[ReadableSpan] = []
        parent = _parent(span, by_id)
        while parent is not None:
            chain.append(parent)
            parent = _parent(parent, by_id)
        return chain

    # gateway publish, under the HTTP span: one producer span for the request's records, the
    # context every record's traceparent names
    activity_topic = namespace.topic("member-activity")
    publish = _one(in_trace, "gateway publish", name=f"{activity_topic} publish")
    assert publish.kind == SpanKind.PRODUCER and publish.status.is_ok
    assert (publish.attributes or {}).get("messaging.batch.message_count") == 1
    assert http in ancestors(publish)

    # every stage service's record span, under the message's creation
    for service in ("awareness", "engagement", "advocacy"):
        consume = _one(
            in_trace,
            f"{service} consume",
            name=f"{activity_topic} process",
            **{"flywheel.service": service},
        )
        assert publish in ancestors(consume), f"{service}'s consume is not under the publish"

    # awareness's batch (processing) and its SQL in the same trace
    batch = _one(in_trace, "awareness batch", name="awareness apply batch")
    assert publish in ancestors(batch)
    sql = [s for s in in_trace if s.kind == SpanKind.CLIENT and batch in ancestors(s)]
    statements = {s.name for s in sql}
    assert {"INSERT", "BEGIN;", "COMMIT;"} & statements, statements
    assert any(
        (s.attributes or {}).get("db.system") == "postgresql"
        or (s.attributes or {}).get("db.system.name") == "postgresql"
        for s in sql
    )

    # the relay's publish of the transition continues the awareness record's trace
    transitions = namespace.topic("journey-transitions")
    relayed = [s for s in in_trace if s.name == f"{transitions} publish"]
    assert relayed, "the outbox relay's publish is not in the request's trace"
    awareness_consume = _one(
        in_trace,
        "awareness consume",
        name=f"{activity_topic} process",
        **{"flywheel.service": "awareness"},
    )
    relay = next(s for s in relayed if awareness_consume in ancestors(s))
    assert relay.kind == SpanKind.PRODUCER
    assert relay.end_time is not None and relay.status.is_ok

    # and the gateway's read model consumed it, as a child of the relay's publish
    projected = _one(
        in_trace,
        "read model consume",
        name=f"{transitions} process",
        **{"flywheel.service": "gateway"},
    )
    assert _parent(projected, by_id) is relay
    assert [s.name for s in reversed(ancestors(projected))][:1] == [http.name]


def test_stamp_keeps_an_existing_traceparent_and_adds_the_current_one() -> None:
    record = encode(
        ACTIVITY,
        activity("m-1", "post"),
        event_id="e-1",
        source="/tests",
    )
    assert telemetry.stamp(record) is record  # no current span: nothing to add
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("cause") as span:
        stamped = telemetry.stamp(record)
    headers = dict(stamped.headers)
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert headers["traceparent"].decode().split("-")[1] == trace_id
    again = OutgoingRecord(
        record.topic, record.key, record.value, [*record.headers, ("traceparent", b"x")], "e-1"
    )
    assert telemetry.stamp(again) is again  # a dead letter keeps its original's context
