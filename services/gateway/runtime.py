"""Wiring the gateway's real collaborators: one FastStream broker (the read model's
subscriber and the activity producer), the read model's PostgreSQL pool, their lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from services.gateway.api import create_app
from services.gateway.publisher import KafkaActivityPublisher
from services.gateway.readmodel import handle_batch
from services.gateway.store import PgJourneyStore
from shared.service import ConsumingService, ServiceSpec
from shared.settings import Settings
from shared.topics import JOURNEY_TRANSITIONS

SPEC = ServiceSpec(
    name="gateway",
    group_id="gateway-journey",
    consumes=(JOURNEY_TRANSITIONS,),
    migrations=Path(__file__).with_name("migrations"),
    build_handler=lambda _settings: handle_batch,  # the projection has no tunable rules
)


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # /healthz and /readyz are served by the API itself, on http_port.
    service = ConsumingService(SPEC, settings.model_copy(update={"health_port": 0}))
    publisher = KafkaActivityPublisher(service.broker, topic_prefix=settings.topic_prefix)
    journey = PgJourneyStore(lambda: service.pool)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start_resources()
        try:
            await service.broker.start()
            yield
        finally:
            service.on_shutdown_signal()
            await service.broker.stop()
            await service.stop_resources()

    return create_app(
        publisher=publisher,
        journey=journey,
        readiness=service.readiness,
        settings=settings,
        lifespan=lifespan,
    )
