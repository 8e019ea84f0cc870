"""Wiring the gateway's real collaborators: one FastStream broker (the read model's
subscriber and the activity producer), the read model's PostgreSQL pool, their lifecycle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from services.gateway import flywheel, identity, readmodel, webhooks
from services.gateway.api import create_app
from services.gateway.delivery.worker import DeliveryWorker
from services.gateway.ports import Unavailable
from services.gateway.publisher import KafkaActivityPublisher
from services.gateway.store import PgJourneyStore
from shared import lifecycle, metrics, telemetry
from shared.cloudevents import derive_event_id, encode
from shared.contracts import CLOCK_TICK, ClockTickV1
from shared.service import ConsumingService, ServiceSpec
from shared.settings import Settings
from shared.topics import (
    JOURNEY_TRANSITIONS,
    MEMBER_ACTIVITY,
    MEMBER_LIFECYCLE,
    SIGNALS_SUCCESS,
    SIGNALS_SUPPORT,
)

log = logging.getLogger(__name__)

SPEC = ServiceSpec(
    name="gateway",
    group_id="gateway-journey",
    # transitions for the journeys; the rest for the flywheel figures' facts
    consumes=(
        JOURNEY_TRANSITIONS,
        MEMBER_LIFECYCLE,
        SIGNALS_SUPPORT,
        SIGNALS_SUCCESS,
        MEMBER_ACTIVITY,
    ),
    migrations=Path(__file__).with_name("migrations"),
    build_handler=readmodel.build_handler,  # the projection, through merges and erasures
    extra_migrations=(lifecycle.MIGRATIONS,),
    replay_tables=(
        "journey_transitions",
        "member_stages",
        "flywheel_acquisitions",
        "flywheel_peer_help",
        "flywheel_questions",
        "flywheel_churn_risk",
        "identities",
        "identity_emails",
        "blocked_identities",
        "outbound_subscriptions",
        "outbound_deliveries",
        "outbound_delivery_attempts",
        "inbox",
        "outbox",
        "watermark",
    ),
)


async def tick_clock(publisher: KafkaActivityPublisher, interval_s: float) -> None:
    """Publish the wall clock as event time, so a quiet community still ages."""
    while True:
        await asyncio.sleep(interval_s)
        now = datetime.now(UTC).replace(microsecond=0)
        tick = ClockTickV1(clock="gateway", occurred_at=now)
        record = encode(
            CLOCK_TICK,
            tick,
            source="/gateway",
            event_id=derive_event_id(CLOCK_TICK.type, "gateway", now.isoformat()),
        )
        try:
            await publisher.publish([record])
        except Unavailable as exc:
            log.warning("clock tick not published (next one will be): %s", exc)


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # /healthz and /readyz are served by the API itself, on http_port.
    service = ConsumingService(SPEC, settings.model_copy(update={"health_port": 0}))
    publisher = KafkaActivityPublisher(
        service.broker, topic_prefix=settings.topic_prefix, timeout_s=settings.publish_timeout_s
    )
    journey = PgJourneyStore(lambda: service.pool)
    identities = identity.IdentityStore(
        lambda: service.pool, wake=lambda: service.relay.wake() if service.relay else None
    )
    guarded = identity.GuardedPublisher(publisher, identities)  # erased people: not published
    # outbound webhooks: a second subscriber on the same broker (its own group) and a sender
    delivery = DeliveryWorker(service.broker, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start_resources()
        ticker: asyncio.Task[None] | None = None
        try:
            await delivery.start(service)
            await service.broker.start()
            if settings.clock_tick_interval_s > 0:
                ticker = asyncio.create_task(tick_clock(publisher, settings.clock_tick_interval_s))
            yield
        finally:
            if ticker is not None:
                ticker.cancel()
            service.on_shutdown_signal()
            delivery.on_shutdown_signal()
            await service.broker.stop()
            await delivery.stop()
            await service.stop_resources()

    async def readiness() -> dict[str, str]:
        # Any replica serves the API; the read model is fed by whichever holds partitions.
        return await service.readiness(need_assignment=False)

    async def prometheus(_: Request) -> Response:
        content_type, body = metrics.prometheus_text()
        return Response(body, media_type=content_type)

    app = create_app(
        publisher=guarded,
        journey=journey,
        readiness=readiness,
        settings=settings,
        lifespan=lifespan,
    )
    webhook_store = webhooks.PgWebhookStore(
        lambda: service.pool, retention_days=settings.inbound_webhook_dedupe_days
    )
    app.include_router(
        webhooks.router(
            publisher=guarded,
            store=webhook_store,
            settings=settings,
            resolve=identities.resolve_activities,  # one member per person
        )
    )
    app.include_router(flywheel.router(lambda: service.pool))
    app.include_router(identity.router(identities))
    app.include_router(delivery.router())
    app.add_route("/metrics", prometheus, include_in_schema=False)
    telemetry.instrument_fastapi(app)
    return app
