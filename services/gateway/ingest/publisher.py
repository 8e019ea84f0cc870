"""Publishing accepted activities to Kafka through the service's FastStream broker.

`ActivityPublisher` is what the routes that publish (ingest, webhooks) depend on, so tests
drive them with in-memory fakes; identity's `GuardedPublisher` wraps the real one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata
from faststream.exceptions import IncorrectState
from faststream.kafka import KafkaBroker

from services.gateway.http.problems import Unavailable
from shared import metrics
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


_BROKER_FAULTS: tuple[type[BaseException], ...] = (KafkaError, IncorrectState, OSError)


class KafkaActivityPublisher:
    """Sends a request's records and returns once every one is acknowledged.

    Records are handed to the producer one after the other (which keeps a member's activities
    in request order on its partition, idempotence keeping it through retries), and their
    acknowledgements are awaited together, so a batch costs one round trip, not one per record.
    The broker is built with `producer_options` (acks=all), so an acknowledged record is
    replicated; `topic_prefix` maps the registry's logical topic to the broker's.
    """

    def __init__(
        self,
        broker: KafkaBroker,
        *,
        topic_prefix: str = "",
        timeout_s: float = DEFAULT_PUBLISH_TIMEOUT_S,
    ) -> None:
        self.broker = broker
        self.topic_prefix = topic_prefix
        self.timeout_s = timeout_s

    async def _enqueue(self, record: OutgoingRecord) -> asyncio.Future[RecordMetadata]:
        return await self.broker.publish(
            record.value,
            self.topic_prefix + record.topic,
            key=record.key,
            headers={name: value.decode() for name, value in record.headers},
            correlation_id=record.event_id,
            no_confirm=True,
        )

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        pending: list[asyncio.Future[RecordMetadata]] = []
        failure: BaseException | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                try:
                    for record in records:
                        pending.append(await self._enqueue(record))
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
