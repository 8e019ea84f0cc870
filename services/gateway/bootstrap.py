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

from services.gateway import dashboard, directory, flywheel, identity, member_state, webhooks
from services.gateway.delivery import fanout
from services.gateway.delivery.worker import CONSUMER_GROUP as DELIVERY_GROUP
from services.gateway.delivery.worker import DeliveryWorker
from services.gateway.http import auth, limits, operations, problems, strength
from services.gateway.http.asyncapi import build_asyncapi
from services.gateway.http.operations import ReadinessCheck
from services.gateway.ingest import routes as ingest_routes
from services.gateway.ingest.publisher import ActivityPublisher, KafkaActivityPublisher
from services.gateway.journey import routes as journey_routes
from services.gateway.journey.projection import project_transitions
from services.gateway.journey.store import JourneyReader, PgJourneyStore
from services.gateway.reports import ReportsDb
from shared import lifecycle, metrics, telemetry
from shared.cloudevents import Envelope
from shared.consumer import BatchHandler
from shared.contracts import ACTIVITY, CLOCK_TICK, MEMBER_ERASED, MEMBER_MERGED
from shared.eventtime import clock_tick
from shared.health import HealthServer
from shared.kafka import make_producer
from shared.postgres import TRANSIENT_DB_ERRORS
from shared.service import ConsumingService, ServiceSpec
from shared.service import run as service_run
from shared.settings import Settings
from shared.topics import (
    JOURNEY_TRANSITIONS,
    MEMBER_ACTIVITY,
    MEMBER_LIFECYCLE,
    SIGNALS_ADVOCACY,
    SIGNALS_PRODUCT,
    SIGNALS_SUCCESS,
    SIGNALS_SUPPORT,
)
from shared.uow import UnitOfWork, unit_of_work

log = logging.getLogger(__name__)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


# --------------------------------------------------------------------------------------------
# the read model's consumer: each feature's projection, through merges and erasures
# --------------------------------------------------------------------------------------------


async def handle_batch(
    uow: UnitOfWork, events: list[Envelope], recent_activities: int = 20
) -> None:
    """Runs inside the batch's unit of work, after the inbox dropped events applied before, so
    a replay or a redelivery changes nothing."""
    await project_transitions(uow, events)
    await flywheel.project_facts(uow, events)
    await directory.project_directory(uow, events, recent_activities)  # after the journey's


def build_handler(settings: Settings) -> BatchHandler:
    """The projections read through merges and erasures (`shared.lifecycle`): a transition
    still keyed by a merged id lands on its survivor; nothing about an erased member is kept."""

    async def merge(uow: UnitOfWork, m: lifecycle.Merge) -> None:
        await member_state.merge_member_state(uow.conn, m.survivor, m.merged)

    async def erase(uow: UnitOfWork, e: lifecycle.Erasure) -> Collection[str]:
        await member_state.erase_member_state(uow.conn, e.ids, e.occurred_at)
        return ()

    async def apply(uow: UnitOfWork, events: list[Envelope]) -> None:
        await handle_batch(uow, events, settings.directory_recent_activities)

    return lifecycle.with_lifecycle(settings, apply=apply, merge=merge, erase=erase)


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
        SIGNALS_ADVOCACY,  # the directory's leaderboards
    ),
    migrations=Path(__file__).with_name("migrations"),
    build_handler=build_handler,  # the projections, through merges and erasures
    extra_migrations=(lifecycle.MIGRATIONS,),
    # Rebuilt from the topics: the journeys and the flywheel's facts. Kept: what only this
    # database holds (identities, blocked identities, outbound subscriptions and their
    # deliveries, webhook_* redelivery records) and the outbox, whose unsent rows (a pending
    # member.erased.v1) must still go out; what the re-read emits again (dead letters) carries
    # the same event ids.
    replay_tables=(
        "journey_transitions",
        "member_stages",
        "flywheel_acquisitions",
        "flywheel_peer_help",
        "flywheel_questions",
        "flywheel_churn_risk",
        "directory_members",
        "directory_activities",
        "directory_kind_counts",
        "directory_advocacy_signals",
        "directory_stage_weeks",
        "directory_cohort_days",  # counted by a trigger on directory_members (migration 009)
        "flywheel_first_touch",
        "flywheel_conversions",
        "flywheel_active_days",
        "flywheel_question_signals",
        "flywheel_drop_offs",
        "flywheel_feedback",
        "flywheel_entries",  # the flywheel's precomputed series (migration 008)
        "flywheel_entry_days",
        "flywheel_spans",
        "flywheel_stage_counts",  # counted by a trigger on member_stages (migration 011)
        "inbox",
    ),
    # activities and clock ticks from HTTP and webhooks; merges and erasures from identity/
    emits=(ACTIVITY, CLOCK_TICK, MEMBER_MERGED, MEMBER_ERASED),
    other_groups=((DELIVERY_GROUP, fanout.OUTPUT_TOPICS),),  # outbound webhooks (delivery/)
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
    resolve: ingest_routes.Resolver | None = None,
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
        # anyone may read it: broker addresses only where the operator chose to publish them
        bootstrap_servers=(
            settings.kafka_bootstrap_servers if settings.asyncapi_show_servers else ""
        ),
        version=API_VERSION,
    )
    problems.install(app)
    # Around the router: an oversized body is refused before any route, key check or parse.
    app.add_middleware(
        limits.BodyLimit,
        max_bytes=settings.max_request_bytes,
        per_path=[
            limits.PathLimit(
                "/v1/webhooks/",
                settings.inbound_webhook_max_bytes,
                "FLYWHEEL_INBOUND_WEBHOOK_MAX_BYTES",
            )
        ],
        body_timeout_s=settings.http_body_timeout_s,
    )
    auth.install(app, settings)
    app.include_router(ingest_routes.router(publisher, settings, resolve))
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


async def tick_clock(service: ConsumingService, interval_s: float) -> None:
    """Publish the wall clock as event time to every partition of member-activity (through the
    outbox, whose relay writes one copy per partition), so a quiet community still ages and a
    quiet partition does not hold the stage services' clocks back."""
    while True:
        await asyncio.sleep(interval_s)
        now = datetime.now(UTC).replace(microsecond=0)
        try:
            assert service.pool is not None and service.relay is not None
            async with unit_of_work(service.pool) as uow:
                uow.emit(clock_tick(now))
            service.relay.wake()
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("clock tick not written (next one will be): %s", exc)


def run_read_model() -> None:
    """`FLYWHEEL_GATEWAY_ROLE=read-model`: only the read model's consumer group, run as a
    stage service is (health and /metrics on FLYWHEEL_HEALTH_PORT), so its projections have
    an event loop, and a core, of their own instead of sharing the API's. Replicas of it
    share the group's partitions like any consumer."""
    service_run(SPEC)


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    if settings.gateway_role == "read-model":
        raise ValueError(
            "FLYWHEEL_GATEWAY_ROLE=read-model runs no API: start it with"
            " `python -m services.gateway`, which then runs only the read model"
        )
    # placeholders and guessable secrets stop the gateway here, before anything starts
    strength.check_settings(settings)
    # /healthz and /readyz are served by the API itself, on http_port. With
    # FLYWHEEL_GATEWAY_ROLE=api the read model's consumer runs elsewhere (`run_read_model`).
    service = ConsumingService(
        SPEC,
        settings.model_copy(update={"health_port": 0}),
        consume=settings.gateway_role == "all",
    )
    publisher = KafkaActivityPublisher(
        lambda: make_producer(settings, "flywheel-gateway-ingest"),
        topic_prefix=settings.topic_prefix,
        timeout_s=settings.publish_timeout_s,
    )
    # reports (/v1/flywheel, journeys, stages) have connections of their own: never ingest's
    reports = ReportsDb(settings)
    journey_store = PgJourneyStore(reports.connection)
    identities = identity.IdentityStore(
        lambda: service.pool, wake=lambda: service.relay.wake() if service.relay else None
    )
    guarded = identity.GuardedPublisher(publisher, identities)  # erased people: not published
    # outbound webhooks: a second subscriber on the same broker (its own group) and a sender
    delivery = DeliveryWorker(service.broker, settings)

    async def readiness() -> dict[str, str]:
        # Any replica serves the API; the read model is fed by whichever holds partitions.
        return await service.readiness(need_assignment=False)

    async def prometheus() -> tuple[str, bytes]:
        return metrics.prometheus_text()

    # /metrics on a port of its own, never on the public API's (docs/SECURITY.md)
    metrics_server = (
        HealthServer(
            settings.http_host,
            settings.metrics_port,
            lambda: operations.public_readiness(readiness),
            extra_routes={"/metrics": prometheus},
        )
        if settings.metrics_port > 0
        else None
    )

    @asynccontextmanager
    async def running(_: FastAPI) -> AsyncIterator[None]:
        await service.start_resources()
        ticker: asyncio.Task[None] | None = None
        try:
            assert service.pool is not None
            await identities.start(settings.pseudonym_key)  # before any request resolves
            await reports.start(
                settings.database_url,
                search_path=await service.pool.fetchval("SELECT current_setting('search_path')"),
            )
            await delivery.start(service)
            await service.broker.start()
            await publisher.start()
            if settings.clock_tick_interval_s > 0:
                ticker = asyncio.create_task(tick_clock(service, settings.clock_tick_interval_s))
            yield
        finally:
            if ticker is not None:
                ticker.cancel()
            service.on_shutdown_signal()
            delivery.on_shutdown_signal()
            await publisher.stop()
            await service.broker.stop()
            await delivery.stop()
            await reports.stop()
            await service.stop_resources()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if metrics_server is None:
            async with running(app):
                yield
            return
        await metrics_server.start()
        try:
            async with running(app):
                yield
        finally:
            await metrics_server.stop()

    app = create_app(
        publisher=guarded,
        journey=journey_store,
        readiness=readiness,
        settings=settings,
        lifespan=lifespan,
        resolve=identities.resolve_activities,  # ?resolve_identities=true: as the webhooks
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
    app.include_router(flywheel.router(reports.connection))
    app.include_router(identity.router(identities))
    app.include_router(delivery.router())
    app.state.metrics_server = metrics_server
    app.state.identities = identities  # who is who (tests and operators look inside)
    members = directory.Directory(
        lambda: service.pool,
        settings,
        group=SPEC.consumer_group,
        topics=[t.name for t in SPEC.consumes],
    )
    app.include_router(directory.router(members))
    dashboard.install(app, members, settings)
    telemetry.instrument_fastapi(app)
    return app
