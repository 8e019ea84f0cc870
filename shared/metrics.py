"""The metrics an operator watches: OpenTelemetry instruments, served to Prometheus at
`/metrics` (each stage service's health port, the gateway's HTTP port) and pushed over OTLP
when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

Every series carries `service`, so several services in one process (the tests) stay apart,
and a Prometheus that scrapes every replica sums them. The two latency histograms observe each
batch once per type (or topic), with its oldest event: the worst of the batch, at a cost that
does not grow with its size. Names as Prometheus shows them:

| metric | labels | what |
| --- | --- | --- |
| `flywheel_records_consumed_total` | service, topic | records read from Kafka |
| `flywheel_events_total` | service, type, outcome | applied, duplicate, dead_lettered |
| `flywheel_batch_size` | service | records per batch (histogram) |
| `flywheel_batch_duration_seconds` | service | one batch, decode to commit (histogram) |
| `flywheel_event_latency_seconds` | service, type | event time -> applied, per batch (histogram) |
| `flywheel_consume_delay_seconds` | service, topic | append -> applied, per batch (histogram) |
| `flywheel_consumer_lag` | service, group, topic, partition | records behind |
| `flywheel_outbox_backlog` | service | outbox rows not yet published |
| `flywheel_outbox_oldest_age_seconds` | service | age of the oldest of them |
| `flywheel_watermark_timestamp_seconds` | service | the service's event-time clock |
| `flywheel_gateway_published_total` | outcome | activities acknowledged or refused by Kafka |
| `flywheel_webhook_deliveries_total` | subscription, outcome | webhook delivery attempts |
| `flywheel_webhook_time_clamped_total` | source | platform times in the future, clamped |
| `flywheel_webhook_delivery_duration_seconds` | subscription, outcome | their latency |
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

if TYPE_CHECKING:
    import asyncpg

    from shared.cloudevents import Envelope, OutgoingRecord
    from shared.records import RawRecord

log = logging.getLogger(__name__)

METER = metrics.get_meter("flywheel")

_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86_400)
_FAST_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)

RECORDS_CONSUMED = METER.create_counter(
    "flywheel.records.consumed", unit="{record}", description="Records read from Kafka."
)
EVENTS = METER.create_counter(
    "flywheel.events",
    unit="{event}",
    description="Events by type and outcome: applied, duplicate (dropped by the inbox), "
    "dead_lettered.",
)
BATCH_SIZE = METER.create_histogram(
    "flywheel.batch.size",
    unit="{record}",
    description="Records per batch.",
    explicit_bucket_boundaries_advisory=_SIZE_BUCKETS,
)
BATCH_DURATION = METER.create_histogram(
    "flywheel.batch.duration",
    unit="s",
    description="One batch from decode to commit.",
    explicit_bucket_boundaries_advisory=_FAST_BUCKETS,
)
EVENT_LATENCY = METER.create_histogram(
    "flywheel.event.latency",
    unit="s",
    description="From an event's time (occurred_at) to its state change committed: one "
    "observation per batch and type, its oldest applied event (the worst of the batch).",
    explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
)
CONSUME_DELAY = METER.create_histogram(
    "flywheel.consume.delay",
    unit="s",
    description="From the record's append to Kafka to its batch committed: one observation "
    "per batch and topic, its oldest record (the worst of the batch).",
    explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
)
LATE_EVENTS = METER.create_counter(
    "flywheel.late_events",
    unit="{event}",
    description="Events that arrived behind their service's event-time clock (applied under "
    "the late-data policy of docs/GUARANTEES.md), by service and topic.",
)
GATEWAY_PUBLISHED = METER.create_counter(
    "flywheel.gateway.published",
    unit="{record}",
    description="Records the gateway handed to Kafka, by outcome (acknowledged, failed).",
)
WEBHOOK_DELIVERIES = METER.create_counter(
    "flywheel.webhook.deliveries",
    unit="{delivery}",
    description="Webhook delivery attempts by subscription and outcome.",
)
WEBHOOK_TIME_CLAMPED = METER.create_counter(
    "flywheel.webhook.time_clamped",
    unit="{activity}",
    description="Activities whose platform time was further in the future than max_future_s, "
    "published at their receipt time instead, by source platform.",
)
WEBHOOK_DURATION = METER.create_histogram(
    "flywheel.webhook.delivery.duration",
    unit="s",
    description="Webhook delivery latency by subscription and outcome.",
    explicit_bucket_boundaries_advisory=_FAST_BUCKETS,
)


def record_webhook_delivery(subscription: str, outcome: str, seconds: float) -> None:
    """For the webhook delivery worker: one attempt. `outcome` is a small fixed set, e.g.
    delivered, retrying, failed, rejected (4xx), timeout."""
    attrs = {"subscription": subscription, "outcome": outcome}
    WEBHOOK_DELIVERIES.add(1, attrs)
    WEBHOOK_DURATION.record(seconds, attrs)


def record_time_clamped(source: str, count: int) -> None:
    """For the webhook receiver: activities whose time it clamped to their receipt."""
    WEBHOOK_TIME_CLAMPED.add(count, {"source": source})


def record_published(outcome: str, count: int) -> None:
    GATEWAY_PUBLISHED.add(count, {"outcome": outcome})


# ---- batches ------------------------------------------------------------------------------


def _type_of(headers: Sequence[tuple[str, bytes]] | None) -> str:
    for name, value in headers or ():
        if name == "ce_type" and value:
            return value.decode("utf-8", "replace")[:100]
    return "undecodable"


def record_applied(
    service: str,
    envelopes: Sequence[Envelope],
    fresh: Sequence[Envelope],
    dead_letters: Sequence[OutgoingRecord],
    late: Sequence[Envelope] = (),
    clock_only: frozenset[str] = frozenset(),
) -> None:
    """After a transaction committed: what it applied, dropped as duplicates, dead-lettered,
    and what moved only the clock (ticks and watermarks, never claimed in the inbox).

    Aggregated per batch: one OpenTelemetry call per (type, outcome) and one latency
    observation per type, the batch's oldest applied event (what alerting cares about). An
    instrument call costs several microseconds; one per event was a fifth of a stage
    service's CPU (docs/PERFORMANCE.md)."""
    now = time.time()
    applied = {id(e) for e in fresh}
    late_by_topic: dict[str, int] = {}
    for envelope in late:
        late_by_topic[envelope.topic] = late_by_topic.get(envelope.topic, 0) + 1
    for topic, n in late_by_topic.items():
        LATE_EVENTS.add(n, {"service": service, "topic": topic})
    counts: dict[tuple[str, str], int] = {}
    oldest: dict[str, datetime] = {}
    for envelope in envelopes:
        type_ = envelope.type
        if type_ in clock_only:
            outcome = "clock"
        elif id(envelope) in applied:
            outcome = "applied"
            seen = oldest.get(type_)
            if seen is None or envelope.time < seen:
                oldest[type_] = envelope.time
        else:
            outcome = "duplicate"
        counts[(type_, outcome)] = counts.get((type_, outcome), 0) + 1
    for record in dead_letters:
        key = (_type_of(record.headers), "dead_lettered")
        counts[key] = counts.get(key, 0) + 1
    for (type_, outcome), n in counts.items():
        EVENTS.add(n, {"service": service, "type": type_, "outcome": outcome})
    for type_, at in oldest.items():
        EVENT_LATENCY.record(max(0.0, now - at.timestamp()), {"service": service, "type": type_})


@dataclass
class ConsumerState:
    """What the lag gauge reads: the next offset to process, per assigned partition."""

    next_offset: dict[tuple[str, int], int] = field(default_factory=dict)


@contextlib.contextmanager
def measuring_batch(
    service: str, records: Sequence[RawRecord], state: ConsumerState | None = None
) -> Any:
    """Around one batch: size, duration, broker-append-to-committed delay (one observation
    per topic: the batch's oldest record), offsets done."""
    started = time.perf_counter()
    yield
    BATCH_DURATION.record(time.perf_counter() - started, {"service": service})
    BATCH_SIZE.record(len(records), {"service": service})
    now_ms = time.time() * 1000
    by_topic: dict[str, int] = {}
    oldest_ms: dict[str, int] = {}
    next_offset = state.next_offset if state is not None else None
    for record in records:
        topic = record.topic
        by_topic[topic] = by_topic.get(topic, 0) + 1
        timestamp = getattr(record, "timestamp", None)
        if isinstance(timestamp, int) and timestamp > 0:
            seen = oldest_ms.get(topic)
            if seen is None or timestamp < seen:
                oldest_ms[topic] = timestamp
        if next_offset is not None:
            tp = (topic, record.partition)
            done = record.offset + 1
            if done > next_offset.get(tp, 0):
                next_offset[tp] = done
    for topic, count in by_topic.items():
        RECORDS_CONSUMED.add(count, {"service": service, "topic": topic})
    for topic, timestamp in oldest_ms.items():
        CONSUME_DELAY.record(
            max(0.0, (now_ms - timestamp) / 1000), {"service": service, "topic": topic}
        )


# ---- gauges refreshed in the background -----------------------------------------------------


@dataclass
class _Observed:
    lag: dict[tuple[str, str, str, int], int] = field(default_factory=dict)
    outbox: dict[str, tuple[int, float]] = field(default_factory=dict)
    watermark: dict[str, float] = field(default_factory=dict)


_OBSERVED = _Observed()


def _observe_lag(_: CallbackOptions) -> Iterable[Observation]:
    for (service, group, topic, partition), lag in list(_OBSERVED.lag.items()):
        yield Observation(
            lag, {"service": service, "group": group, "topic": topic, "partition": partition}
        )


def _observe_backlog(_: CallbackOptions) -> Iterable[Observation]:
    for service, (rows, _age) in list(_OBSERVED.outbox.items()):
        yield Observation(rows, {"service": service})


def _observe_oldest(_: CallbackOptions) -> Iterable[Observation]:
    for service, (_rows, age) in list(_OBSERVED.outbox.items()):
        yield Observation(age, {"service": service})


def _observe_watermark(_: CallbackOptions) -> Iterable[Observation]:
    for service, seconds in list(_OBSERVED.watermark.items()):
        yield Observation(seconds, {"service": service})


METER.create_observable_gauge(
    "flywheel.consumer.lag",
    [_observe_lag],
    unit="{record}",
    description="Records behind the partition's end (last stable offset), per assigned "
    "partition; refreshed every few seconds from the consumer's own fetch state.",
)
METER.create_observable_gauge(
    "flywheel.outbox.backlog",
    [_observe_backlog],
    unit="{record}",
    description="Outbox rows written, not yet published.",
)
METER.create_observable_gauge(
    "flywheel.outbox.oldest_age",
    [_observe_oldest],
    unit="s",
    description="Age of the oldest unpublished outbox row (0 when empty).",
)
METER.create_observable_gauge(
    "flywheel.watermark.timestamp",
    [_observe_watermark],
    unit="s",
    description="The service's event-time watermark (newest event time seen), Unix seconds.",
)


class Poller:
    """Refreshes the gauges that need I/O (lag, outbox, watermark) every `interval_s`, so a
    scrape never waits on the database or the broker."""

    def __init__(
        self,
        *,
        service: str,
        group: str,
        pool: asyncpg.Pool,
        consumer: Callable[[], Any],
        state: ConsumerState,
        interval_s: float = 5.0,
    ) -> None:
        self.service = service
        self.group = group
        self.pool = pool
        self.consumer = consumer
        self.state = state
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"metrics-{self.service}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for key in [k for k in _OBSERVED.lag if k[0] == self.service]:
            del _OBSERVED.lag[key]

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a metric must never take the service down
                log.debug("metrics refresh failed: %s", exc)
            await asyncio.sleep(self.interval_s)

    async def refresh(self) -> None:
        from opentelemetry.instrumentation.utils import suppress_instrumentation

        await self.refresh_lag()
        with suppress_instrumentation():
            row = await self.pool.fetchrow(
                "SELECT count(*) AS n,"
                " COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS age"
                " FROM outbox"
            )
            watermark = await self.pool.fetchval(
                "SELECT EXTRACT(EPOCH FROM event_time)::float8 FROM watermark"
            )
        if row is not None:
            _OBSERVED.outbox[self.service] = (int(row["n"]), float(row["age"]))
        if watermark is not None:
            _OBSERVED.watermark[self.service] = float(watermark)

    async def refresh_lag(self) -> None:
        """The partition end the consumer learnt from its last fetch (no request), minus the
        next offset this service has to process there: what it processed itself, else the
        group's committed offset (one request, only for partitions idle since assignment)."""
        consumer = self.consumer()
        lag: dict[tuple[str, str, str, int], int] = {}
        if consumer is not None:
            assigned = consumer.assignment()
            for tp_key in [k for k in self.state.next_offset if k not in _pairs(assigned)]:
                del self.state.next_offset[tp_key]  # revoked: another replica moves it on
            for tp in assigned:
                end = consumer.last_stable_offset(tp)
                if end is None:
                    end = consumer.highwater(tp)
                done = self.state.next_offset.get((tp.topic, tp.partition))
                if done is None:
                    done = await consumer.committed(tp)
                if end is None or done is None:
                    continue  # nothing fetched there yet
                lag[(self.service, self.group, tp.topic, tp.partition)] = max(0, end - done)
        for key in [k for k in _OBSERVED.lag if k[0] == self.service]:
            if key not in lag:
                del _OBSERVED.lag[key]
        _OBSERVED.lag.update(lag)


def _pairs(partitions: Iterable[Any]) -> set[tuple[str, int]]:
    return {(tp.topic, tp.partition) for tp in partitions}


# ---- export -------------------------------------------------------------------------------

_configured = False


def configure(resource: Any = None) -> None:
    """The meter provider: a Prometheus reader (for `/metrics`), plus OTLP push when an
    endpoint is configured. Once per process; a provider installed before is kept."""
    global _configured
    if _configured:
        return
    _configured = True
    from opentelemetry.sdk.metrics import MeterProvider

    if isinstance(metrics.get_meter_provider(), MeterProvider):
        return
    readers: list[Any] = []
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        readers.append(PrometheusMetricReader())
    except ImportError:  # pragma: no cover - a declared dependency
        log.warning("opentelemetry-exporter-prometheus missing: /metrics stays empty")
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if endpoint and os.environ.get("OTEL_METRICS_EXPORTER", "otlp").lower() == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        except ImportError:  # pragma: no cover - a declared dependency
            log.warning("opentelemetry-exporter-otlp-proto-http missing: metrics not pushed")
    kwargs: dict[str, Any] = {"metric_readers": readers}
    if resource is not None:
        kwargs["resource"] = resource
    metrics.set_meter_provider(MeterProvider(**kwargs))


def prometheus_text() -> tuple[str, bytes]:
    """The Prometheus exposition of every metric of this process."""
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
    except ImportError:  # pragma: no cover - a declared dependency
        return "text/plain; charset=utf-8", b"# prometheus-client is not installed\n"
    return CONTENT_TYPE_LATEST, generate_latest(REGISTRY)


async def prometheus_route() -> tuple[str, bytes]:
    """`/metrics` for shared.health.HealthServer."""
    return prometheus_text()
