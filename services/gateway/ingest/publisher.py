"""Publishing accepted activities to Kafka with a producer of the gateway's own.

`ActivityPublisher` is what the routes that publish (ingest, webhooks) depend on, so tests
drive them with in-memory fakes; identity's `GuardedPublisher` wraps the real one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from services.gateway.http.problems import Unavailable
from shared import metrics, telemetry
from shared.cloudevents import OutgoingRecord

log = logging.getLogger(__name__)

DEFAULT_PUBLISH_TIMEOUT_S = 10.0
"""Bound on one request's wait for acks; aiokafka alone would wait request_timeout_ms (30 s)."""


class ActivityPublisher(Protocol):
    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        """Return only once the broker has acknowledged every record (acks=all).

        Raise `Unavailable` when it cannot; some records may then be written anyway, which is
        harmless: their event ids are derived from the activity, so a retry re-sends the very
        same events and consumers drop the duplicates.
        """
        ...


_BROKER_FAULTS: tuple[type[BaseException], ...] = (KafkaError, OSError)


class KafkaActivityPublisher:
    """Sends a request's records and returns once every one is acknowledged.

    Records are handed to the producer one after the other (which keeps a member's activities
    in request order on its partition, idempotence keeping it through retries), and their
    acknowledgements are awaited together, so a batch costs one round trip, not one per record.
    The producer is `shared.kafka.make_producer`'s (acks=all, idempotent), so an acknowledged
    record is replicated; `topic_prefix` maps the registry's logical topic to the broker's.

    Straight to aiokafka, not through FastStream's `broker.publish`, whose middleware chain,
    span and header dict per record made the gateway's CPU per ingested activity 1.8x what it
    is now (docs/PERFORMANCE.md, fourth round); the request's records share one producer span
    instead (`telemetry.publishing`).
    """

    def __init__(
        self,
        make_producer: Callable[[], AIOKafkaProducer],
        *,
        topic_prefix: str = "",
        timeout_s: float = DEFAULT_PUBLISH_TIMEOUT_S,
    ) -> None:
        """`make_producer` is called by `start` (aiokafka builds a producer inside a running
        event loop only)."""
        self.make_producer = make_producer
        self.topic_prefix = topic_prefix
        self.timeout_s = timeout_s
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        producer = self.make_producer()
        await producer.start()
        self.producer = producer

    async def stop(self) -> None:
        """Waits for what was sent to be acknowledged (aiokafka flushes on stop)."""
        producer, self.producer = self.producer, None
        if producer is not None:
            await producer.stop()

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        if not records:
            return
        if self.producer is None:
            raise Unavailable("kafka", "the gateway is not connected to the broker")
        pending: list[asyncio.Future[RecordMetadata]] = []
        failure: BaseException | None = None
        send, prefix = self.producer.send, self.topic_prefix
        try:
            async with asyncio.timeout(self.timeout_s):
                with telemetry.publishing(prefix + records[0].topic, len(records)) as traced:
                    try:
                        for record in records:
                            pending.append(
                                await send(
                                    prefix + record.topic,
                                    value=record.value,
                                    key=record.key,
                                    headers=[*record.headers, *traced],
                                )
                            )
                    except _BROKER_FAULTS as exc:
                        failure = exc
                    # return_exceptions: wait for every ack, so none is left unobserved.
                    results = await asyncio.gather(*pending, return_exceptions=True)
        except TimeoutError:
            for future in pending:
                future.add_done_callback(_observe)  # its outcome no longer matters to anyone
            metrics.record_published("timed_out", len(records))
            log.warning(
                "publishing %d records timed out after %.1f s", len(records), self.timeout_s
            )
            raise Unavailable(
                "kafka", f"the broker did not acknowledge within {self.timeout_s:g} s"
            ) from None
        failures = [r for r in results if isinstance(r, BaseException)]
        if failure is not None:
            failures.insert(0, failure)
        metrics.record_published("acknowledged", len(records) - len(failures))
        if not failures:
            return
        metrics.record_published("failed", len(failures))
        first = failures[0]
        if not isinstance(first, _BROKER_FAULTS):
            raise first  # a bug, not an outage: let it surface as one
        acknowledged = sum(1 for r in results if not isinstance(r, BaseException))
        log.warning(
            "%d of %d records not acknowledged: %s: %s",
            len(records) - acknowledged,
            len(records),
            type(first).__name__,
            first,
        )
        raise Unavailable("kafka", f"the broker did not take the events ({type(first).__name__})")


def _observe(future: asyncio.Future[RecordMetadata]) -> None:
    if not future.cancelled():
        future.exception()
