"""The gateway, wired: its features (ingest, webhooks, identity, journey, flywheel, delivery)
around one FastStream broker and one PostgreSQL pool, the way `shared.service` wires a stage
service.

- `SPEC` is the gateway as a consuming service: the read model's consumer group, the topics
  its projections read, its migrations, and `build_handler` (each feature's projection, read
  through merges and erasures; each feature's part of those is `member_state`).
- `create_app` is the HTTP app with its collaborators passed in (tests pass in-memory fakes):
  the plumbing (`http`), the ingest, journey and operations routes.
- `build_app` makes the real collaborators (the service, the publisher behind identity's
  guard, the stores, the delivery worker), adds the other features' routes and runs their
  lifecycle under the app's lifespan.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response

from services.gateway import flywheel, identity, member_state, webhooks
from services.gateway.delivery.worker import DeliveryWorker
from services.gateway.http import auth, operations, problems
from services.gateway.http.asyncapi import build_asyncapi
from services.gateway.http.operations import ReadinessCheck
from services.gateway.http.problems import Unavailable
from services.gateway.ingest import routes as ingest_routes
from services.gateway.ingest.publisher import ActivityPublisher, KafkaActivityPublisher
from services.gateway.journey import routes as journey_routes
from services.gateway.journey.projection import project_transitions
from services.gateway.journey.store import JourneyReader, PgJourneyStore
from shared import lifecycle, metrics, telemetry
from shared.cloudevents import Envelope, derive_event_id, encode, source_of
from shared.consumer import BatchHandler
from shared.contracts import CLOCK_TICK, ClockTickV1
from shared.service import ConsumingService, ServiceSpec
from shared.settings import Settings
from shared.topics import (
    JOURNEY_TRANSITIONS,
    MEMBER_ACTIVITY,
    MEMBER_LIFECYCLE,
    SIGNALS_PRODUCT,
    SIGNALS_SUCCESS,
    SIGNALS_SUPPORT,
)
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


# --------------------------------------------------------------------------------------------
# the read model's consumer: each feature's projection, through merges and erasures
# --------------------------------------------------------------------------------------------


async def handle_batch(uow: UnitOfWork, events: list[Envelope]) -> None:
    """Runs inside the batch's unit of work, after the inbox dropped events applied before, so
    a replay or a redelivery changes nothing."""
    await project_transitions(uow, events)
    await flywheel.project_facts(uow, events)


def build_handler(settings: Settings) -> BatchHandler:
    """The projections read through merges and erasures (`shared.lifecycle`): a transition
    still keyed by a merged id lands on its survivor; nothing about an erased member is kept."""

    async def merge(uow: UnitOfWork, m: lifecycle.Merge) -> None:
        await member_state.merge_member_state(uow.conn, m.survivor, m.merged)

    async def erase(uow: UnitOfWork, e: lifecycle.Erasure) -> Collection[str]:
        await member_state.erase_member_state(uow.conn, e.ids, e.occurred_at)
        return ()

    return lifecycle.with_lifecycle(settings, apply=handle_batch, merge=merge, erase=erase)


SPEC = ServiceSpec(
    name="gateway",
    group_id="gateway-journey",
    # transitions for the journeys; the rest for the flywheel figures' facts
    consumes=(
        JOURNEY_TRANSITIONS,
        MEMBER_LIFECYCLE,
        SIGNALS_SUPPORT,
        SIGNALS_SUCCESS,
        SIGNALS_PRODUCT,
        MEMBER_ACTIVITY,
    ),
    migrations=Path(__file__).with_name("migrations"),
    build_handler=build_handler,  # the projections, through merges and erasures
    extra_migrations=(lifecycle.MIGRATIONS,),
    replay_tables=(
        "journey_transitions",
        "member_stages",
        "flywheel_acquisitions",
        "flywheel_peer_help",
        "flywheel_questions",
        "flywheel_churn_risk",
        "flywheel_first_touch",
        "flywheel_conversions",
        "flywheel_active_days",
        "flywheel_question_signals",
        "flywheel_drop_offs",
        "flywheel_feedback",
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


# --------------------------------------------------------------------------------------------
# the HTTP app
# --------------------------------------------------------------------------------------------

API_VERSION = "1.0.0"
DESCRIPTION = """\
Community activity comes in here and leaves as CloudEvents on the `member-activity` Kafka
topic; the stage services (awareness, engagement, advocacy) turn it into
`journey.stage_changed.v1` events, which this gateway projects into a read model.

* Every error is an [RFC 9457](https://www.rfc-editor.org/rfc/rfc9457) problem document
  (`application/problem+json`); validation problems name each bad field as a JSON pointer.
* A batch is all-or-nothing: one invalid activity and nothing is published.
* Retrying is safe: an activity's event id is derived from its `source` and `activity_id`,
  so a re-sent activity is dropped as a duplicate downstream.
* The event contracts are at [`/asyncapi.json`](/asyncapi.json) (AsyncAPI 3.0).
* Every call but health, these documents and the signed platform webhooks needs an API key
  (`Authorization: Bearer <key>` or `X-API-Key: <key>`) holding the scope the operation
  names: `ingest`, `read` or `admin`. Without one: 401; without the scope: 403.
"""


def create_app(
    *,
    publisher: ActivityPublisher,
    journey: JourneyReader,
    readiness: ReadinessCheck,
    settings: Settings | None = None,
    lifespan: Lifespan | None = None,
) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="Community flywheel gateway",
        version=API_VERSION,
        summary="Community activity in; members' journeys out.",
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[auth.guard],  # deny by default: see services/gateway/http/auth.py
        openapi_tags=[
            {"name": "activities", "description": "Ingest community activity."},
            {"name": "journey", "description": "The journey read model."},
            {"name": "operations", "description": "Health and machine-readable contracts."},
        ],
    )
    asyncapi_document = build_asyncapi(
        topic_prefix=settings.topic_prefix,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        version=API_VERSION,
    )
    problems.install(app)
    auth.install(app, settings)
    app.include_router(ingest_routes.router(publisher, settings))
    app.include_router(journey_routes.router(journey))
    app.include_router(operations.router(readiness, asyncapi_document))
    _install_openapi(app)
    return app


def _install_openapi(app: FastAPI) -> None:
    """The raw-body route documents its body by reference: add those schemas to components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            _, defs = models_json_schema(
                [(model, "validation") for model in ingest_routes.OPENAPI_MODELS],
                ref_template="#/components/schemas/{model}",
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in defs.get("$defs", {}).items():
                components.setdefault(name, definition)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# --------------------------------------------------------------------------------------------
# the process
# --------------------------------------------------------------------------------------------


async def tick_clock(publisher: KafkaActivityPublisher, interval_s: float) -> None:
    """Publish the wall clock as event time, so a quiet community still ages."""
    while True:
        await asyncio.sleep(interval_s)
        now = datetime.now(UTC).replace(microsecond=0)
        tick = ClockTickV1(clock="gateway", occurred_at=now)
        record = encode(
            CLOCK_TICK,
            tick,
            source=source_of("gateway"),
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
    journey_store = PgJourneyStore(lambda: service.pool)
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
        journey=journey_store,
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
