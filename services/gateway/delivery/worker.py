"""Outbound delivery inside the gateway process: the fan-out consumer and the sender.

The fan-out is a second batch subscriber on the gateway's broker, in its own consumer group
(`gateway-webhooks`), subscribed like any service's (`shared.service.subscribe_batches`),
so the read model and the webhooks keep separate offsets and a read
model rebuild never re-sends webhooks. It reuses the shared `BatchProcessor` (per-record
decoding, dead letters, transient retries, one transaction per batch with the inbox) over a
pool of its own whose search_path resolves `inbox` to `outbound_fanout.inbox`: the read model
claims event ids in the gateway's `inbox`, and both read some of the same events.
Dead letters go to the gateway's outbox and its relay.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from fastapi import APIRouter
from faststream.kafka import KafkaBroker

from services.gateway.delivery import fanout, routes, targets, vault
from services.gateway.delivery.sender import AttemptReport, DeliveryObserver, Sender
from shared import metrics
from shared.consumer import BatchProcessor
from shared.postgres import SERVER_SETTINGS
from shared.service import ConsumingService, subscribe_batches
from shared.settings import Settings

log = logging.getLogger(__name__)

NAME = "gateway-webhooks"
CONSUMER_GROUP = "gateway-webhooks"
INBOX_SCHEMA = "outbound_fanout"  # created by migrations/003_outbound_subscriptions.sql


def metrics_observer(report: AttemptReport) -> None:
    """Deliveries by outcome (delivered, retrying, dead) and latency, per subscription."""
    metrics.record_webhook_delivery(report.subscription_id, report.outcome, report.latency_s)


class DeliveryWorker:
    def __init__(
        self,
        broker: KafkaBroker,
        settings: Settings,
        *,
        observer: DeliveryObserver = metrics_observer,
    ) -> None:
        """Registers the fan-out subscriber: call before the broker starts."""
        self.settings = settings
        self.observer = observer
        # a refusal to start (a malformed or placeholder key) comes here, before anything runs
        self.vault = vault.SecretVault.from_settings(settings)
        self.policy = targets.TargetPolicy.from_settings(settings)
        self.gateway: ConsumingService | None = None
        self.pool: asyncpg.Pool | None = None
        self.processor: BatchProcessor | None = None
        self.sender: Sender | None = None
        self._stopping = False
        self.subscriber = subscribe_batches(
            broker,
            settings,
            name=NAME,
            consumer_group=CONSUMER_GROUP,
            topics=fanout.OUTPUT_TOPICS,
            processor=lambda: self.processor,
        )

    def _committed(self) -> None:
        """A batch committed: deliveries to send, maybe dead letters for the relay."""
        if self.sender is not None:
            self.sender.wake()
        if self.gateway is not None and self.gateway.relay is not None:
            self.gateway.relay.wake()

    async def start(self, gateway: ConsumingService) -> None:
        """After the gateway's resources started (its migrations ran, its relay publishes
        our dead letters too), before the broker starts."""
        s = self.settings
        assert gateway.pool is not None, "the gateway's resources are not started"
        self.gateway = gateway
        search_path = await gateway.pool.fetchval("SELECT current_setting('search_path')")
        self.pool = await asyncpg.create_pool(
            s.database_url,
            min_size=1,
            max_size=4,
            command_timeout=60,
            server_settings={**SERVER_SETTINGS, "search_path": f"{INBOX_SCHEMA}, {search_path}"},
        )
        self.processor = BatchProcessor(
            service=NAME,
            pool=self.pool,
            handle_batch=fanout.handle_batch,
            wanted_types=fanout.wanted_types,  # the rest is left undecoded
            max_attempts=s.handler_max_attempts,
            retry_initial_s=s.transient_retry_initial_s,
            retry_max_s=s.transient_retry_max_s,
            max_value_bytes=s.max_request_bytes,
            on_committed=self._committed,
            is_stopping=lambda: self._stopping,
            topic_prefix=s.topic_prefix,
            max_future_s=s.max_future_s,
        )
        if self.vault is None:
            log.warning(
                "FLYWHEEL_SECRETS_KEYS is not set: outbound webhooks are off (nothing is sent; "
                "creating a subscription answers 503); events are still queued for them"
            )
            return
        async with self.pool.acquire() as conn:
            await vault.reseal_all(conn, self.vault)  # plaintext or older-key rows: current key
        self.sender = Sender(
            self.pool, s, observer=self.observer, policy=self.policy, vault=self.vault
        )
        self.sender.start()

    def on_shutdown_signal(self) -> None:
        """SIGTERM: stop retrying transient faults and starting attempts at once."""
        self._stopping = True
        if self.sender is not None:
            self.sender.stop_claiming()

    async def stop(self) -> None:
        """After the broker stopped (no batch in hand). Attempts in flight get a short share of
        the shutdown grace, which the gateway's batch and outbox flush need more."""
        self._stopping = True
        if self.sender is not None:
            await self.sender.stop(timeout_s=min(1.0, self.settings.shutdown_grace_s * 0.1))
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), 2.0)
            except TimeoutError:
                self.pool.terminate()

    def router(self) -> APIRouter:
        return routes.router(
            lambda: self.pool, wake_sender=self._wake_sender, policy=self.policy, vault=self.vault
        )

    def _wake_sender(self) -> None:
        if self.sender is not None:
            self.sender.wake()
