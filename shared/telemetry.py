"""Tracing across every hop, HTTP to Kafka to PostgreSQL to Kafka again.

One W3C trace context travels with each event: in the `traceparent`/`tracestate` record
headers on Kafka, and in the outbox row's stored headers between a handler's transaction and
the relay's publish. What does what:

- the gateway's HTTP server span: FastAPI instrumentation (`instrument_fastapi`);
- the gateway's publish: `publishing()`, one producer span per request under the HTTP span,
  whose `traceparent` every record of the request carries;
- consuming: `consuming()` here, not FastStream's middleware. For a batch subscriber FastStream
  opens one span per batch as the *root of a new trace* with links to the records (and only
  to records carrying its own `correlation_id` header), so no request would ever be one trace
  with its consumption. Instead each record gets its own `<topic> process` span parented to its
  own producer's context, and the batch (one transaction) gets a `<service> apply batch` span
  parented to the first traced record and linked to every record's context; the handler's
  SQL (asyncpg instrumentation) runs under that batch span;
- emitting: `emit_stamper()` stamps each event a handler emits with the context of the record
  (same key: the member) that caused it, so the outbox row carries the request's trace;
- the relay: `traced_send()` opens a producer span under the stored context and re-injects its
  own context, so the downstream consumer's span is a child of the relay's publish (without
  an SDK tracer the record goes with its stored context as it is).

Configured by the standard OTEL_* variables: traces go to OTLP/HTTP when
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, to stdout when
`OTEL_TRACES_EXPORTER=console`, nowhere otherwise (context still propagates); the sampler is
`OTEL_TRACES_SAMPLER` (default parent-based always-on); `OTEL_SERVICE_NAME` defaults to the
service's name; `OTEL_SDK_DISABLED=true` turns it all off.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer
    from fastapi import FastAPI

    from shared.cloudevents import OutgoingRecord
    from shared.records import RawRecord

log = logging.getLogger(__name__)

TRACER = trace.get_tracer("flywheel")
PROPAGATOR = TraceContextTextMapPropagator()
TRACE_HEADERS = ("traceparent", "tracestate")
MAX_LINKS = 128
"""Links per batch span: the SDK keeps 128 by default, more would be dropped anyway."""

_configured: str | None = None
_batch: contextvars.ContextVar[BatchTrace | None] = contextvars.ContextVar(
    "flywheel_batch_trace", default=None
)


# ---- set-up -------------------------------------------------------------------------------


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def configure(service: str) -> None:
    """Once per process (later calls do nothing): tracer and meter providers from the OTEL_*
    environment, asyncpg instrumentation. A provider someone installed before (a test's
    in-memory exporter) is kept."""
    global _configured
    if _configured is not None:
        return
    _configured = service
    if _truthy("OTEL_SDK_DISABLED"):
        return
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME") or f"flywheel-{service}"}
    )
    _configure_tracing(resource)
    from shared import metrics

    metrics.configure(resource)
    instrument_asyncpg()


def _configure_tracing(resource: Any) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return  # installed by whoever embeds us (tests)
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    wanted = os.environ.get("OTEL_TRACES_EXPORTER", "otlp" if endpoint else "none").lower()
    if wanted in ("none", ""):
        return  # the API's no-op tracer: context still propagates through headers
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    provider = TracerProvider(resource=resource, sampler=quiet_sampler())
    if wanted == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:  # pragma: no cover - a declared dependency
            log.warning("opentelemetry-exporter-otlp-proto-http missing: spans not exported")
            return
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def quiet_sampler() -> Any:
    """The OTEL_TRACES_SAMPLER sampler, minus root client spans: a SQL statement that belongs
    to no request (the relay's polling, readiness probes, metrics) would otherwise be a trace
    of its own several times a second."""
    from opentelemetry.sdk.trace.sampling import (
        Decision,
        Sampler,
        SamplingResult,
        _get_from_env_or_default,
    )

    class _DropOrphanClientSpans(Sampler):
        def __init__(self, delegate: Sampler) -> None:
            self.delegate = delegate

        def should_sample(
            self,
            parent_context: Context | None,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Any = None,
            links: Sequence[Link] | None = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            parent = trace.get_current_span(parent_context).get_span_context()
            if kind == SpanKind.CLIENT and not parent.is_valid:
                return SamplingResult(Decision.DROP)
            return self.delegate.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )

        def get_description(self) -> str:
            return f"DropOrphanClientSpans{{{self.delegate.get_description()}}}"

    return _DropOrphanClientSpans(_get_from_env_or_default())


def instrument_asyncpg() -> None:
    """Every query a span (under the batch span); idempotent."""
    try:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    except ImportError:  # pragma: no cover - a declared dependency
        log.warning("opentelemetry-instrumentation-asyncpg missing: no database spans")
        return
    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


def instrument_fastapi(app: FastAPI) -> None:
    """Server spans for the API (not for probes and scrapes, which would drown it)."""
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    except ImportError:  # pragma: no cover - a declared dependency
        log.warning("opentelemetry-instrumentation-fastapi missing: no HTTP server spans")
        return
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls="healthz,readyz,metrics", exclude_spans=["receive", "send"]
    )


# ---- consuming ----------------------------------------------------------------------------


def context_of(headers: Sequence[tuple[str, bytes]] | Mapping[str, Any] | None) -> Context:
    """The trace context a record carries (empty if none)."""
    if headers is None:
        return Context()
    if isinstance(headers, Mapping):
        carrier = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in headers.items()}
    else:
        carrier = {
            name: value.decode("latin-1")
            for name, value in headers
            if name in TRACE_HEADERS and value is not None
        }
    return PROPAGATOR.extract(carrier)


_NO_CONTEXT = Context()
_TRACE_HEADER_SET = frozenset(TRACE_HEADERS)


def _record_context(headers: Sequence[tuple[str, bytes]] | None) -> Context:
    """`context_of` a consumed record's headers, without a propagator call for the (usual)
    record that carries no trace context."""
    for name, _ in headers or ():
        if name in _TRACE_HEADER_SET:
            return context_of(headers)
    return _NO_CONTEXT


def _recording() -> bool:
    """Whether an SDK tracer provider is installed: without one (no exporter configured, or
    `OTEL_SDK_DISABLED`) every span is a no-op that only carries its parent's context."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def trace_headers(ctx: Context | None = None) -> list[tuple[str, bytes]]:
    """`traceparent` (and `tracestate`) of a context, as Kafka headers."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, context=ctx)
    return [(name, carrier[name].encode()) for name in TRACE_HEADERS if name in carrier]


@dataclasses.dataclass
class BatchTrace:
    """The spans of one batch, and which context each member's emitted events inherit."""

    span: Span
    by_key: dict[bytes, Context]

    def context_for(self, key: bytes | None) -> Context:
        found = self.by_key.get(key or b"")
        return found if found is not None else otel_context.get_current()


@contextmanager
def consuming(
    service: str, group: str, records: Sequence[RawRecord]
) -> Iterator[BatchTrace | None]:
    """Spans around one batch: a `<topic> process` span per record under the record's own
    context, and the current `<service> apply batch` span for the transaction."""
    if not records:
        yield None
        return
    contexts = [_record_context(r.headers) for r in records]
    if not _recording():
        # No SDK tracer: every span would be the no-op tracer's, i.e. its parent's own
        # non-recording span. Emitted events inherit each record's context as they would then,
        # without a span object and an attribute dict per record (~10 % of a service's CPU).
        first = next(
            (
                span
                for c in contexts
                if c is not _NO_CONTEXT
                and (span := trace.get_current_span(c)).get_span_context().is_valid
            ),
            trace.INVALID_SPAN,
        )
        noop = BatchTrace(first, {r.key or b"": c for r, c in zip(records, contexts, strict=True)})
        token = _batch.set(noop)
        try:
            with trace.use_span(noop.span, end_on_exit=True, record_exception=True):
                yield noop
        finally:
            _batch.reset(token)
        return
    traced = [c for c in contexts if trace.get_current_span(c).get_span_context().is_valid]
    links: list[Link] = []
    seen: set[int] = set()
    for c in traced:
        sc = trace.get_current_span(c).get_span_context()
        if sc.span_id not in seen and len(links) < MAX_LINKS:
            seen.add(sc.span_id)
            links.append(Link(sc))
    topics = sorted({r.topic for r in records})
    batch_span = TRACER.start_span(
        f"{service} apply batch",
        context=traced[0] if traced else Context(),
        kind=SpanKind.CONSUMER,
        links=links,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.consumer.group.name": group,
            "messaging.batch.message_count": len(records),
            "messaging.destination.name": ",".join(topics),
            "flywheel.service": service,
        },
    )
    batch_link = [Link(batch_span.get_span_context())]
    by_key: dict[bytes, Context] = {}
    record_spans: list[Span] = []
    for record, ctx in zip(records, contexts, strict=True):
        span = TRACER.start_span(
            f"{record.topic} process",
            context=ctx,
            kind=SpanKind.CONSUMER,
            links=batch_link,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": record.topic,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
                "messaging.consumer.group.name": group,
                "flywheel.service": service,
                **_event_id(record.headers),
            },
        )
        record_spans.append(span)
        by_key[record.key or b""] = trace.set_span_in_context(span)
    batch = BatchTrace(batch_span, by_key)
    token = _batch.set(batch)
    try:
        with trace.use_span(batch_span, end_on_exit=True, record_exception=True):
            yield batch
    except BaseException as exc:
        for span in record_spans:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        _batch.reset(token)
        for span in record_spans:
            span.end()


def _event_id(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    for name, value in headers or ():
        if name == "ce_id" and value is not None:
            return {"messaging.message.id": value.decode("utf-8", "replace")}
    return {}


def emit_stamper() -> Callable[[OutgoingRecord], OutgoingRecord]:
    """For `UnitOfWork.stamp`: each emitted event carries the trace context of its cause, so
    the outbox row, and the relay's publish from it, continue the trace of that record."""
    batch = _batch.get()
    return lambda record: stamp(record, batch.context_for(record.key) if batch else None)


def stamp(record: OutgoingRecord, ctx: Context | None = None) -> OutgoingRecord:
    """The record with `traceparent`/`tracestate` of `ctx` (default: the current context).
    A record that already carries one (a dead letter keeps its original's) is left alone."""
    if ctx is _NO_CONTEXT:
        return record  # caused by a record that carried no trace context: nothing to add
    if any(name == "traceparent" for name, _ in record.headers):
        return record
    extra = trace_headers(ctx)
    if not extra:
        return record
    return dataclasses.replace(record, headers=[*record.headers, *extra])


# ---- publishing a request's records ------------------------------------------------------


@contextmanager
def publishing(topic: str, count: int) -> Iterator[list[tuple[str, bytes]]]:
    """One producer span for records sent together (a request's activities, a webhook's),
    under the current context (the HTTP span); yields the trace headers each of those records
    must carry, so every consumer's span is a child of this one. The span ends with the block,
    after the acknowledgements; an exception leaves it with an error status.

    One span per request, not per record: OpenTelemetry's messaging conventions allow a
    batch's records one creation context, and a request of 500 activities then costs one span
    and one header injection, not 500."""
    with TRACER.start_as_current_span(
        f"{topic} publish",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "publish",
            "messaging.destination.name": topic,
            "messaging.batch.message_count": count,
        },
    ) as span:
        yield trace_headers() if span.get_span_context().is_valid else []


# ---- the outbox relay ---------------------------------------------------------------------


async def traced_send(
    producer: AIOKafkaProducer,
    topic: str,
    *,
    value: bytes | None,
    key: bytes | None,
    headers: list[tuple[str, bytes]],
    partition: int | None = None,
) -> asyncio.Future[Any]:
    """`producer.send` under a producer span that continues the context stored with the
    outbox row; the record carries the span's own context onwards. The span ends with the
    broker's acknowledgement.

    Without an SDK tracer the span would be the no-op tracer's, carrying the stored context
    unchanged, and the re-injected headers the stored ones: the record goes as stored (its
    cause's context, stamped when it was emitted), without a span, a context extraction and
    an attribute dict per record (every emitted event pays for them)."""
    if not _recording():
        sent: asyncio.Future[Any] = await producer.send(
            topic, value=value, key=key, headers=headers, partition=partition
        )
        return sent
    stored = context_of(headers)
    span = TRACER.start_span(
        f"{topic} publish",
        context=stored,
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "publish",
            "messaging.destination.name": topic,
            **_event_id(headers),
        },
    )
    if span.get_span_context().is_valid:
        headers = [h for h in headers if h[0] not in TRACE_HEADERS]
        headers += trace_headers(trace.set_span_in_context(span, stored))
    try:
        future: asyncio.Future[Any] = await producer.send(
            topic, value=value, key=key, headers=headers, partition=partition
        )
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        span.end()
        raise

    def _done(f: asyncio.Future[Any]) -> None:
        if f.cancelled():
            span.set_status(Status(StatusCode.ERROR, "cancelled"))
        elif f.exception() is not None:
            span.set_status(Status(StatusCode.ERROR, type(f.exception()).__name__))
        else:
            meta = f.result()
            span.set_attribute("messaging.destination.partition.id", str(meta.partition))
            span.set_attribute("messaging.kafka.offset", meta.offset)
        span.end()

    future.add_done_callback(_done)
    return future
