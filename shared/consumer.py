"""Applying a batch of records: decode, dedupe, apply, emit, in one transaction.

What can go wrong, and what happens:
- a record that cannot be decoded or fails its schema: dead-lettered at once (it will never
  get better), the rest of the batch is applied; so is an event dated further ahead of its
  record's Kafka timestamp than `max_future_s` (`future_reason`);
- the database or broker is unreachable: the batch is retried with back-off, never
  dead-lettered; offsets are not committed until it succeeds;
- the handler raises for some record: the batch is split and each record retried on its own
  up to `handler_max_attempts` times; a record that still fails is dead-lettered with the error.
Dead letters are outbox rows, so they are as durable as the state change beside them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared import metrics, telemetry
from shared.cloudevents import (
    DecodeError,
    Envelope,
    OutgoingRecord,
    decode_batch,
    derive_event_id,
)
from shared.eventtime import (
    CLOCK_ONLY_TYPES,
    EventClock,
    PartitionView,
    is_clock_only,
    watermark,
)
from shared.postgres import TRANSIENT_DB_ERRORS, Connection
from shared.records import RawRecord
from shared.uow import UnitOfWork, unit_of_work

log = logging.getLogger(__name__)

BatchHandler = Callable[[UnitOfWork, list[Envelope]], Awaitable[None]]

WantedTypes = Callable[[Connection], Awaitable[frozenset[str]]]
"""The event types a consumer acts on now, read from its database once per batch: a consumer
that only acts on some types (the gateway's webhook fan-out: those some subscription wants)
leaves the others undecoded (`BatchProcessor`, `wanted_types`)."""


@dataclass
class BatchStats:
    """Counters since start; the metrics and the operator CLI read them."""

    batches: int = 0
    consumed: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    late: int = 0
    transient_retries: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Decoded:
    """A batch decoded (`BatchProcessor.decode`): its events in order, the dead letters of
    the records that could not be events, and the records left undecoded because their type
    was not wanted when they were read (with that type; `BatchProcessor.apply` decodes those
    whose type has become wanted since)."""

    envelopes: list[Envelope]
    poison: list[OutgoingRecord]
    skipped: list[tuple[RawRecord, str]] = field(default_factory=list)

    @staticmethod
    def joined(parts: Sequence[Decoded]) -> Decoded:
        """Parts of one batch decoded one after the other, as one."""
        if len(parts) == 1:
            return parts[0]
        return Decoded(
            [e for p in parts for e in p.envelopes],
            [d for p in parts for d in p.poison],
            [k for p in parts for k in p.skipped],
        )


def record_type(record: RawRecord) -> str | None:
    """The record's `ce_type` header, or None when it has none readable (it is then decoded,
    and dead-lettered if it is not an event)."""
    for name, value in record.headers or ():
        if name == "ce_type":
            try:
                return value.decode()
            except (AttributeError, UnicodeDecodeError):
                return None
    return None


DLQ_MAX_VALUE_BYTES = 900_000
"""A dead letter must fit in one record (1 MiB by default, for the producer and the broker)
with the headers it gains. A dead letter the broker refuses would stop the outbox relay, and
every event behind it, for good; so a longer value is cut to this, and headers give its length
and SHA-256. The whole record stays on its own topic at dlq_topic/dlq_partition/dlq_offset."""


def dead_letter(
    record: RawRecord, reason: str, *, service: str, detail: str = "", topic_prefix: str = ""
) -> OutgoingRecord:
    """The original bytes and headers, plus where they came from and why they failed."""
    headers = list(record.headers or ())
    headers += [
        ("dlq_reason", reason.encode()[:4000]),
        ("dlq_service", service.encode()),
        ("dlq_topic", record.topic.encode()),
        ("dlq_partition", str(record.partition).encode()),
        ("dlq_offset", str(record.offset).encode()),
    ]
    if detail:
        headers.append(("dlq_detail", detail.encode()[:8000]))
    value = record.value or b""
    if record.value is None:
        headers.append(("dlq_tombstone", b"true"))  # the original value was null, not empty
    if len(value) > DLQ_MAX_VALUE_BYTES:
        headers += [
            ("dlq_value_truncated", b"true"),
            ("dlq_value_bytes", str(len(value)).encode()),
            ("dlq_value_sha256", hashlib.sha256(value).hexdigest().encode()),
        ]
        value = value[:DLQ_MAX_VALUE_BYTES]
    return OutgoingRecord(
        topic=f"{record.topic.removeprefix(topic_prefix)}.dlq",  # the outbox holds logical names
        key=record.key or b"",
        value=value,
        headers=headers,
        event_id=derive_event_id(
            "dlq", service, record.topic, str(record.partition), str(record.offset)
        ),
    )


def future_reason(envelope: Envelope, timestamp_ms: int | None, max_future_s: float) -> str | None:
    """Why an event is dated too far ahead of its record to be believed, or None.

    An event time in the future would move a service's event-time clock ahead of every real
    event, and every engaged member would look inactive until the world caught up with it. The
    gateway refuses such activities and the webhooks clamp them, but a topic has other
    producers. The bound is measured against the record's Kafka timestamp, not this process's
    clock: a replay a year later decides every record exactly as the first reading did.
    """
    if timestamp_ms is None or timestamp_ms <= 0:
        return None  # no timestamp to compare with: the record passes
    if envelope.time.timestamp() - timestamp_ms / 1000 < max_future_s - 1:
        return None  # clearly within the bound: no datetimes built (every record asks)
    written = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    ahead = (envelope.time - written).total_seconds()
    if ahead <= max_future_s:
        return None
    return (
        f"event time {envelope.time.astimezone(UTC).isoformat()} is {ahead:.0f} s ahead of the "
        f"record's Kafka timestamp {written.isoformat()}; at most {max_future_s:g} s "
        "(FLYWHEEL_MAX_FUTURE_S) is allowed"
    )


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_DB_ERRORS)


class BatchProcessor:
    def __init__(
        self,
        *,
        service: str,
        pool: asyncpg.Pool,
        handle_batch: BatchHandler,
        max_attempts: int = 3,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 10.0,
        max_value_bytes: int = 1_048_576,
        on_committed: Callable[[], None] = lambda: None,
        is_stopping: Callable[[], bool] = lambda: False,
        topic_prefix: str = "",
        max_future_s: float | None = None,
        clock: EventClock | None = None,
        watermark_topics: Sequence[str] = (),
        wanted_types: WantedTypes | None = None,
    ) -> None:
        """`max_future_s`: see `future_reason`; None accepts any event time.

        `wanted_types`: records of other types are neither decoded, nor claimed in the inbox,
        nor given to the handler, nor dead-lettered; each batch reads the set once, before its
        transaction, and decodes what became wanted since the batch was read. A record without
        a readable type is decoded (and dead-lettered) as always. None: every record."""
        self.service = service
        self.wanted_types = wanted_types
        self._wanted: frozenset[str] | None = None  # as of the last batch; None: not read yet
        self.clock = clock
        self.watermark_topics = tuple(watermark_topics)
        """Logical topics this service feeds downstream: each gets the service's watermark on
        every partition whenever its clock moves (docs/GUARANTEES.md, "Event time")."""
        self.pool = pool
        self.handle_batch = handle_batch
        self.max_attempts = max_attempts
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.max_value_bytes = max_value_bytes
        self.on_committed = on_committed
        self.is_stopping = is_stopping
        self.topic_prefix = topic_prefix
        self.max_future_s = max_future_s
        self.stats = BatchStats()

    def decode(self, records: Sequence[RawRecord]) -> Decoded:
        """The batch's events and its dead letters: pure CPU, no I/O. The consumer runs it for
        the next batch while this one's transaction and offset commit are in flight
        (`shared.service`), then hands both to `apply`. With `wanted_types`, the records of
        a type the last batch's look found unwanted are set aside undecoded."""
        wanted = self._wanted
        skipped: list[tuple[RawRecord, str]] = []
        if wanted is not None:
            kept: list[RawRecord] = []
            for record in records:
                type_name = record_type(record)
                if type_name is None or type_name in wanted:
                    kept.append(record)
                else:
                    skipped.append((record, type_name))
            records = kept
        envelopes, poison = self._decode(records)
        return Decoded(envelopes, poison, skipped)

    async def _now_wanted(self, records: Sequence[RawRecord], decoded: Decoded) -> Decoded:
        """`decoded` with the set-aside records whose type is wanted now decoded too, the
        events in the order of `records` (the batch as read), as if none had been set aside."""
        assert self.wanted_types is not None
        async with self.pool.acquire() as conn:
            self._wanted = wanted = await self.wanted_types(conn)
        late = [record for record, type_name in decoded.skipped if type_name in wanted]
        if not late:
            return decoded
        envelopes, poison = self._decode(late)
        read_at = {(r.topic, r.partition, r.offset): i for i, r in enumerate(records)}
        envelopes = sorted(
            [*decoded.envelopes, *envelopes],
            key=lambda e: read_at[(e.topic, e.partition, e.offset)],
        )
        skipped = [(r, t) for r, t in decoded.skipped if t not in wanted]
        return Decoded(envelopes, [*decoded.poison, *poison], skipped)

    def _decode(self, records: Sequence[RawRecord]) -> tuple[list[Envelope], list[OutgoingRecord]]:
        envelopes: list[Envelope] = []
        poison: list[OutgoingRecord] = []
        max_future_s = self.max_future_s
        decoded = decode_batch(
            records,
            max_value_bytes=self.max_value_bytes,
            topic_prefix=self.topic_prefix,  # the type must belong to the topic
        )
        for record, outcome in zip(records, decoded, strict=True):
            if isinstance(outcome, Envelope) and max_future_s is not None:
                timestamp = getattr(record, "timestamp", None)  # fakes and old formats
                if reason := future_reason(outcome, timestamp, max_future_s):
                    outcome = DecodeError(reason)
            if isinstance(outcome, Envelope):
                envelopes.append(outcome)
                continue
            log.warning(
                "dead-lettering %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                outcome.reason,
            )
            poison.append(
                dead_letter(
                    record,
                    outcome.reason,
                    service=self.service,
                    topic_prefix=self.topic_prefix,
                    detail=repr(outcome.detail) if outcome.detail else "",
                )
            )
        return envelopes, poison

    async def process(
        self, records: Sequence[RawRecord], view: PartitionView | None = None
    ) -> None:
        """Returns only when every record is durably applied or dead-lettered. `view` is what
        the consumer knew of its partitions when it handed the batch over (the clock needs it
        to tell an idle partition from one still to be read)."""
        await self.apply(records, self.decode(records), view)

    async def apply(
        self, records: Sequence[RawRecord], decoded: Decoded, view: PartitionView | None = None
    ) -> None:
        """`process` for a batch already decoded (`decode`): returns only when every record is
        durably applied or dead-lettered."""
        view = view or PartitionView()
        if self.wanted_types is not None:
            current = decoded
            decoded = await self._with_transient_retry(lambda: self._now_wanted(records, current))
        envelopes, poison = decoded.envelopes, decoded.poison
        try:
            await self._with_transient_retry(lambda: self._apply(envelopes, poison, view))
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning(
                "batch of %d failed (%s: %s); applying its records one by one",
                len(envelopes),
                type(exc).__name__,
                exc,
            )
            await self._with_transient_retry(lambda: self._apply([], poison, view))
            for envelope in envelopes:
                await self._apply_alone(envelope, records, view)
        self.stats.batches += 1
        self.stats.consumed += len(records)
        self.on_committed()

    async def _apply(
        self, envelopes: list[Envelope], poison: list[OutgoingRecord], view: PartitionView
    ) -> None:
        async with unit_of_work(self.pool) as uow:
            uow.stamp = telemetry.emit_stamper()  # emitted events continue their cause's trace
            for record in poison:
                uow.emit(record)
            if self.clock is not None:
                uow.clock = await self.clock.observe(uow.conn, envelopes, view)
            # Ticks and watermarks only move clocks: their copies on every partition share one
            # id, so they never go through the inbox, and handlers never see them.
            fresh = await uow.claim([e for e in envelopes if not is_clock_only(e)])
            moved = uow.clock is not None and uow.clock.advanced
            if fresh or moved:
                await self.handle_batch(uow, fresh)
            if moved and uow.clock is not None and uow.clock.after is not None:
                for topic in self.watermark_topics:  # last: after everything it vouches for
                    uow.emit(watermark(self.service, topic, uow.clock.after))
        self.stats.dead_lettered += len(poison)
        self.stats.duplicates += uow.duplicates
        if uow.duplicates:
            # Redeliveries after a crash, a rebalance or a re-send: worth seeing, not a fault.
            log.info(
                "%s: dropped %d duplicate(s) of %d event(s) already applied",
                self.service,
                uow.duplicates,
                len(envelopes),
            )
        self.stats.applied += len(fresh)
        late = uow.clock.late if uow.clock is not None else ()
        self.stats.late += len(late)
        metrics.record_applied(self.service, envelopes, fresh, poison, late, CLOCK_ONLY_TYPES)
        for envelope in fresh:
            self.stats.by_type[envelope.type] = self.stats.by_type.get(envelope.type, 0) + 1

    async def _apply_alone(
        self, envelope: Envelope, records: Sequence[RawRecord], view: PartitionView
    ) -> None:
        last_error: BaseException | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                await self._with_transient_retry(lambda: self._apply([envelope], [], view))
                return
            except Exception as exc:
                if is_transient(exc):
                    raise
                last_error = exc
                log.warning(
                    "event %s failed attempt %d/%d: %s",
                    envelope.id,
                    attempt,
                    self.max_attempts,
                    exc,
                )
        assert last_error is not None
        record = next(
            r
            for r in records
            if r.offset == envelope.offset
            and r.partition == envelope.partition
            and r.topic == envelope.topic
        )
        reason = (
            f"handler failed {self.max_attempts} times: {type(last_error).__name__}: {last_error}"
        )
        detail = "".join(traceback.format_exception(last_error))[-8000:]
        await self._with_transient_retry(
            lambda: self._apply(
                [],
                [
                    dead_letter(
                        record,
                        reason,
                        service=self.service,
                        topic_prefix=self.topic_prefix,
                        detail=detail,
                    )
                ],
                view,
            )
        )

    async def _with_transient_retry(self, work: Callable[[], Awaitable[Any]]) -> Any:
        delay = self.retry_initial_s
        while True:
            try:
                return await work()
            except Exception as exc:
                if not is_transient(exc) or self.is_stopping():
                    raise
                self.stats.transient_retries += 1
                log.warning(
                    "transient fault (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
