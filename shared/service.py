"""What every consuming service is made of, written once.

A service declares a `ServiceSpec` (its name, the topics it reads, its migrations and its batch
handler); `ConsumingService` wires the rest: the FastStream broker and batch subscriber
(offsets committed only after the batch's transaction commits), the PostgreSQL pool and
migrations, the outbox relay, health endpoints and graceful shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError
from faststream import AckPolicy, FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.subscriber.usecase import LogicSubscriber

from shared import metrics, telemetry
from shared.consumer import BatchHandler, BatchProcessor, Decoded
from shared.eventtime import ClockTopic, EventClock, PartitionView
from shared.health import HealthServer
from shared.kafka import broker_security, consumer_options, make_producer, producer_options
from shared.logs import configure_logging
from shared.outbox import OutboxRelay
from shared.postgres import PLUMBING_MIGRATIONS, create_pool, migrate, redact
from shared.records import RawRecord
from shared.runtime import tune_garbage_collector
from shared.settings import Settings
from shared.topics import DATA_TOPICS, Topic

if TYPE_CHECKING:
    from shared.contracts import EventType

log = logging.getLogger(__name__)

# Shares of FLYWHEEL_SHUTDOWN_GRACE_S at SIGTERM: the batch in hand may take this much, the
# outbox flush what is left of the grace minus a margin for closing; a watchdog ends a process
# that still runs when the grace is over (a hang is a bug, and the work not committed is simply
# redelivered).
BATCH_SHARE = 0.6
CLOSE_MARGIN_SHARE = 0.1


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    consumes: tuple[Topic, ...]
    migrations: Path
    build_handler: Callable[[Settings], BatchHandler]
    """Called once at start-up with the settings: loads the rules, returns the batch handler."""
    group_id: str = ""  # default: the service name
    extra_migrations: Sequence[Path] = field(default_factory=tuple)
    clock_topics: tuple[Topic, ...] = ()
    """The inputs whose progress moves this service's event-time clock (every partition of
    each); empty: the service keeps no clock."""
    replay_tables: tuple[str, ...] = ()
    """The tables `flywheel replay SERVICE --from-beginning` truncates: the state this service
    derives from its input topics, rebuilt by reading them again, with the inbox and the
    event-time clock. Never the outbox (its unsent rows must still be published; what the
    re-read emits again carries the same event ids) nor what no topic holds (configuration,
    identities, delivery logs)."""
    emits: tuple[EventType, ...] = ()
    """Every event type the service publishes (through its outbox or directly): its topics
    are the ones `flywheel acls` lets the service's principal write, besides the dead-letter
    topics of what it consumes."""
    other_groups: tuple[tuple[str, tuple[Topic, ...]], ...] = ()
    """Further consumer groups of the same process, with the topics each reads (the gateway's
    outbound delivery worker): `flywheel acls` grants them to the service's principal too."""

    @property
    def consumer_group(self) -> str:
        return self.group_id or self.name

    @property
    def produces(self) -> tuple[Topic, ...]:
        """The topics of the event types it emits, each once, in declaration order."""
        found: dict[str, Topic] = {}
        for event_type in self.emits:
            for topic in event_type.topics:
                found.setdefault(topic.name, topic)
        return tuple(found.values())


def bootstrap_hosts(servers: str) -> list[str]:
    """`host:port,host:port` as the list FastStream's broker needs to try each of them."""
    return [h.strip() for h in servers.split(",") if h.strip()]


async def _no_decode(*_: Any) -> None:
    """Records are decoded by BatchProcessor, record by record, so one bad record
    cannot fail the batch."""
    return None


async def _lean_batch_parser(
    records: tuple[RawRecord, ...], original: Callable[[Any], Awaitable[Any]]
) -> Any:
    """FastStream's batch parser, given only the batch's first record: it decodes every
    record's headers into a dict (for `batch_headers`, which nothing here reads), 5-8 % of a
    stage service's CPU. The message still carries the whole batch as `raw_message`, which
    is what the handler reads (and what `Pipeline` rewinds by when a batch fails)."""
    if len(records) <= 1:
        return await original(records)
    message = await original(records[:1])
    message.raw_message = records
    return message


def subscribe_batches(
    broker: KafkaBroker,
    settings: Settings,
    *,
    name: str,
    consumer_group: str,
    topics: Sequence[Topic],
    processor: Callable[[], BatchProcessor | None],
    consumer_state: metrics.ConsumerState | None = None,
) -> LogicSubscriber[Any]:
    """A batch subscriber on `broker` whose batches go to the processor `processor()` returns
    (it is built at start-up, after the subscriber): offsets are committed only once the
    batch's transaction committed. `ConsumingService` and the gateway's outbound delivery
    worker (a second consumer group on the gateway's broker) both subscribe through this.

    One batch's transaction and offset commit run while the next batch is fetched and decoded
    (`Pipeline`; `FLYWHEEL_CONSUMER_OVERLAP=0` turns that off); transactions still run one at
    a time, in the order the batches were read."""
    group = settings.topic_prefix + consumer_group
    pipeline = Pipeline(
        name=name,
        group=group,
        topic_prefix=settings.topic_prefix,
        max_records=settings.consumer_max_records,
        overlap=settings.consumer_overlap,
    )
    subscriber: LogicSubscriber[Any] = broker.subscriber(
        *(settings.topic(t.name) for t in topics),
        group_id=group,
        # Offsets are committed by the pipeline, explicitly, after each batch's transaction:
        # FastStream's ack would commit the consumer's position, which is past the next batch.
        ack_policy=AckPolicy.MANUAL,
        decoder=_no_decode,
        parser=_lean_batch_parser,
        listener=pipeline,
        **consumer_options(settings, consumer_group),
    )
    pipeline.subscriber = subscriber
    pipeline.processor = processor
    pipeline.consumer_state = consumer_state

    async def _on_batch(msg: KafkaMessage) -> None:
        raw = msg.raw_message
        records: tuple[RawRecord, ...] = raw if isinstance(raw, tuple) else (raw,)
        await pipeline.on_batch(records)

    subscriber(_on_batch)
    stop_subscriber = subscriber.stop

    async def stop() -> None:
        """The batch whose transaction is in flight finishes and commits its offsets before
        the consumer stops (FastStream waits only for the handler in hand)."""
        pipeline.closing = True
        await pipeline.drain(quietly=True)
        await stop_subscriber()

    subscriber.stop = stop  # type: ignore[method-assign]
    return subscriber


TOP_UP_WAIT_MS = 5
"""How long one look for more records waits while the previous batch is in flight."""


class Pipeline(ConsumerRebalanceListener):  # type: ignore[misc]
    """Batch N's transaction and offset commit in flight while batch N+1 is fetched (aiokafka
    prefetches) and decoded (here, in the handler). A catch-up otherwise leaves the core idle
    while PostgreSQL commits and the broker stores the offsets.

    Nothing a batch promises changes: its transaction runs only after the previous one and its
    offset commit finished (one in flight, in the order read); its offsets are committed
    explicitly, after its transaction, and only its own. When partitions are revoked (a
    rebalance) a batch read before the revocation and not yet begun is dropped unapplied: the
    new assignment reads it again from the committed offsets. When a batch fails, it and the
    batch read behind it are rewound (each partition to its earliest record of the two) and
    read again, as FastStream's nack did.
    """

    def __init__(
        self,
        *,
        name: str,
        group: str,
        topic_prefix: str,
        max_records: int = 2000,
        overlap: bool = True,
    ) -> None:
        self.name = name
        self.overlap = overlap
        """Off: each batch's transaction and offset commit finish before the handler returns
        (FastStream then fetches the next). See `Settings.consumer_overlap`."""
        self.max_records = max_records
        self.group = group
        self.topic_prefix = topic_prefix
        self.subscriber: LogicSubscriber[Any] | None = None
        self.processor: Callable[[], BatchProcessor | None] = lambda: None
        self.consumer_state: metrics.ConsumerState | None = None
        self.pending: asyncio.Task[None] | None = None
        self.pending_records: tuple[RawRecord, ...] = ()
        self.generation = 0
        """Bumped at every revocation: a batch read before it is not applied."""
        self.closing = False
        self.dropped = 0
        """Batches read before a revocation and dropped unapplied (read again)."""

    async def on_batch(self, first: tuple[RawRecord, ...]) -> None:
        current = self.processor()
        assert current is not None, "batch before start-up finished"
        assert self.subscriber is not None
        consumer = self.subscriber.consumer
        generation = self.generation
        behind = self.pending_records
        batch = list(first)
        parts: list[Decoded] = []
        try:
            parts.append(current.decode(first))  # while the previous batch commits
            if self.overlap:
                await self._top_up(consumer, current, batch, parts, generation)
            view = await partition_view(consumer, self.topic_prefix)
            await self.drain()
        except BaseException:
            # Not applied: read this batch again, and the one before it unless it is known to
            # have committed (it rewinds itself when it fails; no partition may then be sought
            # past its records; if it did commit, its records come again as duplicates, which
            # the inbox drops).
            _rewind(consumer, (*behind, *batch))
            raise
        records = tuple(batch)
        decoded = Decoded.joined(parts)
        if generation != self.generation or not _assigned(consumer, records):
            # Each partition still ours goes back to this batch's first record of it: records
            # the top-up read after the new assignment moved the position past them (those
            # read before it were sought back to the committed offset by the assignment, and
            # the batch before this one is known to have committed: drain returned).
            _rewind(consumer, records)
            self.dropped += 1
            log.info(
                "%s: batch of %d read before a rebalance dropped; read again from the "
                "committed offsets",
                self.name,
                len(records),
            )
            return
        self.pending_records = records
        self.pending = asyncio.create_task(self._apply_and_commit(current, records, decoded, view))
        if not self.overlap or self.closing or not self.subscriber.running:
            await self.drain()

    async def _top_up(
        self,
        consumer: Any,
        current: BatchProcessor,
        batch: list[RawRecord],
        parts: list[Decoded],
        generation: int,
    ) -> None:
        """Fill this batch up to `max_records` with what the fetcher holds or, while the
        previous batch is still in flight, with what arrives meanwhile, decoded as it comes.
        Without it a catch-up's batches would hold only what the fetcher had buffered when the
        previous batch began, and pay a transaction, an fsync, an offset commit and (with a
        clock) a sweep per few hundred records. Once nothing is in flight it never waits: a
        live batch is what has arrived. Records are appended in the order read, so each
        partition's stay in order."""
        pending = self.pending
        while (
            consumer is not None
            and len(batch) < self.max_records
            and generation == self.generation
            and not self.closing
        ):
            in_flight = pending is not None and not pending.done()
            more = await consumer.getmany(
                timeout_ms=TOP_UP_WAIT_MS if in_flight else 0,
                max_records=self.max_records - len(batch),
            )
            got = [r for records in more.values() for r in records]
            if got:
                batch.extend(got)
                parts.append(current.decode(got))
            elif not in_flight:
                return

    async def _apply_and_commit(
        self,
        current: BatchProcessor,
        records: tuple[RawRecord, ...],
        decoded: Decoded,
        view: PartitionView,
    ) -> None:
        consumer = self.subscriber.consumer if self.subscriber is not None else None
        try:
            with (
                telemetry.consuming(self.name, self.group, records),
                metrics.measuring_batch(self.name, records, self.consumer_state),
            ):
                await current.apply(records, decoded, view)
            if consumer is not None:
                await consumer.commit(_next_offsets(records))
        except CommitFailedError as exc:
            # The group rebalanced while the transaction ran: the partitions' new owner (or
            # this replica again) reads the records from the last commit, and the inbox drops
            # what this transaction applied. Nothing to redo here.
            log.info("%s: offsets of a batch of %d not committed: %s", self.name, len(records), exc)
        except BaseException:
            _rewind(consumer, records)  # at once: no later batch may be needed to retry it
            raise

    async def drain(self, *, quietly: bool = False) -> bool:
        """Wait for the batch in flight (its transaction, then its offsets). Its failure is
        raised to every waiter but a quiet one, which gets False (its records are read again:
        the batch rewound its partitions). Several may wait at once: the handler for the next
        batch, a revocation, the shutdown."""
        task = self.pending
        if task is None:
            return True
        try:
            await asyncio.shield(task)  # a waiter cancelled does not cancel the batch
        except BaseException as exc:
            if not task.done():
                raise  # this waiter was cancelled; the batch goes on
            if not quietly:
                raise
            log.warning(
                "%s: batch of %d not committed (%s: %s); it is read again",
                self.name,
                len(self.pending_records),
                type(exc).__name__,
                exc,
            )
            return False
        finally:
            if task.done() and self.pending is task:
                self.pending = None
                self.pending_records = ()
        return True

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Before the group rebalances: a batch read but not yet begun is dropped (its
        partitions may go to another replica, which reads them from the committed offsets).
        The batch in flight is not waited for (a slow transaction must not hold up the whole
        group): it finishes, and its offset commit may fail, as a batch in hand always could
        (`_apply_and_commit`)."""
        self.generation += 1

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        return None


def _next_offsets(records: Sequence[RawRecord]) -> dict[TopicPartition, int]:
    """What to commit once the batch is durable: each partition's last offset + 1."""
    last: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        if r.offset >= last.get(key, -1):
            last[key] = r.offset
    return {TopicPartition(t, p): offset + 1 for (t, p), offset in last.items()}


def _rewind(consumer: Any, records: Sequence[RawRecord]) -> None:
    """Seek each partition to its earliest record among `records` (still assigned ones only):
    the next fetch reads them again."""
    if consumer is None:
        return
    earliest: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        if r.offset < earliest.get(key, r.offset + 1):
            earliest[key] = r.offset
    assigned = consumer.assignment()
    for (topic, partition), offset in earliest.items():
        tp = TopicPartition(topic, partition)
        if tp in assigned:
            consumer.seek(tp, offset)


def _assigned(consumer: Any, records: Sequence[RawRecord]) -> bool:
    """Every partition of `records` is still assigned to this consumer."""
    if consumer is None:
        return True
    assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
    return {(r.topic, r.partition) for r in records} <= assigned


async def partition_view(consumer: Any, topic_prefix: str) -> PartitionView:
    """What the consumer knows now: partitions per subscribed topic, and which assigned ones it
    has read to their log end (its position at the highwater of the last fetch)."""
    if consumer is None:
        return PartitionView()
    assigned = consumer.assignment()
    partitions: dict[str, int] = {}
    caught_up: dict[tuple[str, int], bool] = {}
    for tp in assigned:
        name = tp.topic.removeprefix(topic_prefix)
        if name not in partitions:
            partitions[name] = len(consumer.partitions_for_topic(tp.topic) or ())
        highwater = consumer.highwater(tp)
        caught_up[(name, tp.partition)] = (
            highwater is not None and await consumer.position(tp) >= highwater
        )
    return PartitionView(partitions, caught_up)


class ConsumingService:
    """A service's resources (pool, migrations, outbox relay, health) around its consumer.

    `consume=False` leaves the consumer out: the gateway's API process when its read model
    runs in a process of its own (`FLYWHEEL_GATEWAY_ROLE=api`), which still needs the pool,
    the migrations and the relay for what its requests publish."""

    def __init__(
        self, spec: ServiceSpec, settings: Settings | None = None, *, consume: bool = True
    ) -> None:
        self.spec = spec
        self.settings = settings or Settings()
        self.pool: asyncpg.Pool | None = None
        self.processor: BatchProcessor | None = None
        self.relay: OutboxRelay | None = None
        self.health: HealthServer | None = None
        self._stopping = False
        self._shutdown_began: float | None = None  # time.monotonic() at SIGTERM
        self._watchdog: threading.Timer | None = None
        s = self.settings
        telemetry.configure(spec.name)
        self.consumer_state = metrics.ConsumerState()
        self.metrics_poller: metrics.Poller | None = None
        self.broker = KafkaBroker(
            # A list: FastStream wraps a str in one, and aiokafka splits only a str on commas,
            # so "b1:9092,b2:9092" given whole was one unresolvable host.
            bootstrap_hosts(s.kafka_bootstrap_servers),
            client_id=f"flywheel-{spec.name}",
            graceful_timeout=s.shutdown_grace_s * BATCH_SHARE,  # the batch in hand
            log_level=logging.DEBUG,  # one line per batch is noise at INFO
            logger=logging.getLogger("faststream.access.kafka"),  # our handler, our format
            security=broker_security(s),  # TLS and SASL, FLYWHEEL_KAFKA_* (docs/SECURITY.md)
            **producer_options(s),
        )
        self.subscriber: LogicSubscriber[Any] | None = (
            subscribe_batches(
                self.broker,
                s,
                name=spec.name,
                consumer_group=spec.consumer_group,
                topics=spec.consumes,
                processor=lambda: self.processor,
                consumer_state=self.consumer_state,
            )
            if consume
            else None
        )

    # ---- lifecycle ------------------------------------------------------------------------

    async def start_resources(self) -> None:
        """Database, migrations, relay, health: everything but the subscription."""
        s = self.settings
        log.info(
            "%s starting: kafka=%s database=%s group=%s",
            self.spec.name,
            s.kafka_bootstrap_servers,
            redact(s.database_url),
            self.spec.consumer_group,
        )
        self.pool = await create_pool(s.database_url, max_size=4)
        await migrate(
            self.pool, [PLUMBING_MIGRATIONS, *self.spec.extra_migrations, self.spec.migrations]
        )
        # Every service runs one, even a pure read model: dead letters go through the outbox.
        self.relay = OutboxRelay(
            service=self.spec.name,
            database_url=s.database_url,
            producer_factory=lambda: make_producer(s, f"flywheel-{self.spec.name}-outbox"),
            batch_size=s.outbox_batch_size,
            poll_interval_s=s.outbox_poll_interval_s,
            retry_max_s=s.transient_retry_max_s,
            topic_prefix=s.topic_prefix,
        )
        self.relay.start()
        self.metrics_poller = metrics.Poller(
            service=self.spec.name,
            group=s.topic_prefix + self.spec.consumer_group,
            pool=self.pool,
            consumer=lambda: self.subscriber.consumer if self.subscriber is not None else None,
            state=self.consumer_state,
        )
        self.metrics_poller.start()
        if self.subscriber is not None:  # without a consumer (the API-only gateway), no batches
            self.processor = BatchProcessor(
                service=self.spec.name,
                pool=self.pool,
                handle_batch=self.spec.build_handler(s),
                max_attempts=s.handler_max_attempts,
                retry_initial_s=s.transient_retry_initial_s,
                retry_max_s=s.transient_retry_max_s,
                max_value_bytes=s.max_request_bytes,
                on_committed=self.relay.wake,
                is_stopping=lambda: self._stopping,
                topic_prefix=s.topic_prefix,
                max_future_s=s.max_future_s,
                clock=self._clock(),
                watermark_topics=[
                    t.name for t in DATA_TOPICS if t.watermark_from == self.spec.name
                ],
            )
        if s.health_port:
            self.health = HealthServer(
                s.http_host,
                s.health_port,
                self.readiness,
                extra_routes={"/metrics": metrics.prometheus_route},
            )
            await self.health.start()

    def _clock(self) -> EventClock | None:
        if not self.spec.clock_topics:
            return None
        return EventClock(
            [ClockTopic(t.name, t.watermark_from) for t in self.spec.clock_topics],
            lateness=timedelta(seconds=self.settings.allowed_lateness_s),
            idle_after=timedelta(seconds=self.settings.idle_partition_s),
            topic_prefix=self.settings.topic_prefix,
        )

    async def stop_resources(self) -> None:
        """After the broker stopped: flush the outbox, then close."""
        self._stopping = True
        if self.metrics_poller is not None:
            await self.metrics_poller.stop()
        if self.relay is not None:
            await self.relay.stop(timeout_s=self._left_of_grace(CLOSE_MARGIN_SHARE))
        if self.health is not None:
            await self.health.stop()
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), max(0.1, self._left_of_grace(0)))
            except TimeoutError:
                self.pool.terminate()
        if self._watchdog is not None:
            self._watchdog.cancel()  # stopped in time (in-process, the interpreter lives on)
        if self._shutdown_began is None:
            log.info("%s stopped", self.spec.name)
        else:
            took = time.monotonic() - self._shutdown_began
            log.info("%s stopped %.2f s after SIGTERM", self.spec.name, took)

    def _left_of_grace(self, margin_share: float) -> float:
        """Seconds left of the shutdown grace, less a margin; without a signal (tests stopping
        a service in-process), half the grace."""
        grace = self.settings.shutdown_grace_s
        if self._shutdown_began is None:
            return grace / 2
        left = grace * (1 - margin_share) - (time.monotonic() - self._shutdown_began)
        return max(0.1, left)

    async def readiness(self, *, need_assignment: bool = True) -> dict[str, str]:
        """{component: problem}; a consumer with no partitions (rebalancing, or more replicas
        than partitions) is not ready unless `need_assignment` is off (the gateway's API)."""
        problems: dict[str, str] = {}
        consumer = self.subscriber.consumer if self.subscriber is not None else None
        if need_assignment and (consumer is None or not consumer.assignment()):
            problems["consumer"] = "no partitions assigned (joining the group, or idle replica)"
        try:
            assert self.pool is not None
            async with asyncio.timeout(2):
                await self.pool.fetchval("SELECT 1")
        except Exception as exc:
            problems["database"] = f"{type(exc).__name__}: {exc}"
        try:
            async with asyncio.timeout(2):
                if not await self.broker.ping(timeout=2):
                    problems["kafka"] = "broker did not answer"
        except Exception as exc:
            problems["kafka"] = f"{type(exc).__name__}: {exc}"
        return problems

    def app(self) -> FastStream:
        app = FastStream(self.broker)
        app.on_startup(self.start_resources)
        app.on_shutdown(self.on_shutdown_signal)  # before the broker stops
        app.after_shutdown(self.stop_resources)
        return app

    def on_shutdown_signal(self) -> None:
        """SIGTERM (or SIGINT): stop retrying transient faults (the batch is then redelivered,
        not lost), start the grace clock and the watchdog that enforces it."""
        self._stopping = True
        self._shutdown_began = time.monotonic()
        grace = self.settings.shutdown_grace_s
        log.info(
            "%s shutting down: finishing the batch in hand (%.1f s grace)", self.spec.name, grace
        )
        if self._watchdog is None:
            self._watchdog = threading.Timer(grace, self._shutdown_overdue)
            self._watchdog.daemon = True
            self._watchdog.start()

    def _shutdown_overdue(self) -> None:
        log.error(
            "%s did not stop within FLYWHEEL_SHUTDOWN_GRACE_S=%.1f s; exiting anyway (what was"
            " not committed is redelivered)",
            self.spec.name,
            self.settings.shutdown_grace_s,
        )
        logging.shutdown()
        os._exit(1)


def run(spec: ServiceSpec) -> None:
    """Entry point of `python -m services.<name>`."""
    settings = Settings()
    configure_logging(spec.name, settings.log_level, settings.log_format)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a declared dependency
        pass
    app = ConsumingService(spec, settings).app()
    tune_garbage_collector(settings.gc_threshold)
    asyncio.run(app.run())
