"""The webhook subscriptions API: subscribe a URL to event types, read the delivery log,
replay. Admin only: a subscription can send any member's journey to any URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Body, Query
from fastapi.params import Depends
from pydantic import AfterValidator, AnyHttpUrl, AwareDatetime, BaseModel, ConfigDict, Field
from starlette.responses import Response

from services.gateway.delivery import store
from services.gateway.delivery.fanout import DELIVERABLE_TYPES
from services.gateway.delivery.signing import check_secret, generate_secret
from services.gateway.http import auth
from services.gateway.http.problems import PROBLEM_JSON, TYPE_PREFIX, ProblemError, Unavailable
from services.gateway.http.views import Problem
from shared.postgres import TRANSIENT_DB_ERRORS, Connection

SUBSCRIPTION_NOT_FOUND = TYPE_PREFIX + "subscription-not-found"
DELIVERY_NOT_FOUND = TYPE_PREFIX + "delivery-not-found"
INVALID_REPLAY_WINDOW = TYPE_PREFIX + "invalid-replay-window"

ADMIN_DEPENDENCIES: Sequence[Depends] = (auth.require("admin"),)


def _deliverable(event_type: str) -> str:
    if event_type not in DELIVERABLE_TYPES:
        raise ValueError(
            f"{event_type!r} is not an event type this gateway delivers; "
            f"one of: {', '.join(DELIVERABLE_TYPES)}"
        )
    return event_type


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


DeliverableType = Annotated[str, AfterValidator(_deliverable)]


class View(BaseModel):
    model_config = ConfigDict(frozen=True)


class SubscriptionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    url: AnyHttpUrl = Field(
        description="Where each event is POSTed (https in production).",
        examples=["https://crm.example.com/hooks/flywheel"],
    )
    event_types: Annotated[list[DeliverableType], AfterValidator(_unique)] = Field(
        min_length=1,
        description="CloudEvents types to deliver: "
        + ", ".join(f"`{t}`" for t in DELIVERABLE_TYPES),
        examples=[["signal.advocate.v1", "signal.champion_nominated.v1"]],
    )
    secret: Annotated[str, AfterValidator(check_secret)] | None = Field(
        default=None,
        description="Standard Webhooks signing secret, `whsec_` + base64 of 24 to 64 random "
        "bytes; generated (and returned once) when omitted.",
    )
    description: str | None = Field(default=None, max_length=500)


class SubscriptionView(View):
    id: str
    url: str
    event_types: list[str]
    description: str | None
    created_at: datetime


class CreatedSubscription(SubscriptionView):
    secret: str = Field(
        description="The signing secret. Shown here only: store it in the receiver."
    )


class Subscriptions(View):
    subscriptions: list[SubscriptionView]


class AttemptView(View):
    attempt: int
    attempted_at: datetime
    status_code: int | None = Field(description="The receiver's answer; null if none came.")
    latency_ms: float
    error: str | None
    outcome: Literal["delivered", "failed", "dead"]


class DeliveryView(View):
    id: int
    subscription_id: str
    event_id: str = Field(description="The CloudEvent id, sent as `webhook-id`.")
    event_type: str
    subject: str = Field(description="The member the event is about (its ordering key).")
    event_time: datetime
    status: Literal["pending", "delivered", "dead"]
    attempts: int = Field(description="Attempts since it was queued (or last replayed).")
    next_attempt_at: datetime | None = Field(description="When a pending one is tried next.")
    last_status_code: int | None
    last_error: str | None
    created_at: datetime = Field(description="When the event was queued for this subscription.")
    finished_at: datetime | None = Field(description="When it was delivered or given up.")
    attempt_log: list[AttemptView] = Field(description="Every attempt, oldest first.")


class Deliveries(View):
    deliveries: list[DeliveryView] = Field(description="Newest first.")
    next_before: int | None = Field(
        description="Pass as `before` for the next (older) page; null on the last page."
    )


class ReplayWindow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: AwareDatetime = Field(description="Deliveries queued at or after this time...")
    until: AwareDatetime = Field(description="...and before this one.")
    status: Literal["delivered", "dead"] | None = Field(
        default=None, description="Only those delivered, or only the dead; both when omitted."
    )


class Replayed(View):
    replayed: int = Field(description="Deliveries queued again.")


def _subscription(row: store.SubscriptionRow) -> SubscriptionView:
    return SubscriptionView(
        id=row.id,
        url=row.url,
        event_types=list(row.event_types),
        description=row.description,
        created_at=row.created_at,
    )


def _delivery(row: store.DeliveryRow) -> DeliveryView:
    return DeliveryView(
        id=row.id,
        subscription_id=row.subscription_id,
        event_id=row.event_id,
        event_type=row.event_type,
        subject=row.member_key,
        event_time=row.event_time,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        created_at=row.created_at,
        finished_at=row.finished_at,
        attempt_log=[
            AttemptView(
                attempt=a.attempt,
                attempted_at=a.attempted_at,
                status_code=a.status_code,
                latency_ms=a.latency_ms,
                error=a.error,
                outcome=a.outcome,
            )
            for a in row.attempt_log
        ],
    )


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "model": Problem,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _no_subscription(subscription_id: str) -> ProblemError:
    return ProblemError(
        404,
        SUBSCRIPTION_NOT_FOUND,
        "Subscription not found",
        f"no webhook subscription {subscription_id!r}",
    )


def router(
    pool: Callable[[], asyncpg.Pool | None],
    *,
    wake_sender: Callable[[], None] = lambda: None,
    dependencies: Sequence[Depends] = ADMIN_DEPENDENCIES,
) -> APIRouter:
    routes = APIRouter(
        tags=["subscriptions"], dependencies=list(dependencies), responses=dict(auth.RESPONSES)
    )

    @asynccontextmanager
    async def connection() -> AsyncIterator[Connection]:
        current = pool()
        if current is None:
            raise Unavailable("database", "the webhook store is starting")
        try:
            async with current.acquire() as conn:
                yield conn
        except TRANSIENT_DB_ERRORS as exc:
            raise Unavailable("database", f"the webhook store: {exc}") from exc

    @routes.post(
        "/v1/subscriptions",
        summary="Subscribe a URL to event types",
        description="From now on, every event of these types the gateway reads is POSTed to "
        "the URL as a structured-mode CloudEvent (`application/cloudevents+json`), signed "
        "per Standard Webhooks (`webhook-id` = the event id, `webhook-timestamp`, "
        "`webhook-signature`). Events emitted before the subscription are not sent.",
        status_code=201,
        response_model=CreatedSubscription,
        responses={422: _problem("A field is invalid; `errors` names each.")},
    )
    async def create(body: Annotated[SubscriptionRequest, Body()]) -> CreatedSubscription:
        secret = body.secret or generate_secret()
        async with connection() as conn:
            row = await store.create_subscription(
                conn,
                url=str(body.url),
                event_types=body.event_types,
                secret=secret,
                description=body.description,
            )
        return CreatedSubscription(**_subscription(row).model_dump(), secret=secret)

    @routes.get(
        "/v1/subscriptions",
        summary="Every webhook subscription (without secrets)",
        response_model=Subscriptions,
    )
    async def list_all() -> Subscriptions:
        async with connection() as conn:
            rows = await store.list_subscriptions(conn)
        return Subscriptions(subscriptions=[_subscription(r) for r in rows])

    @routes.get(
        "/v1/subscriptions/{subscription_id}",
        summary="One webhook subscription (without its secret)",
        response_model=SubscriptionView,
        responses={404: _problem("No such subscription.")},
    )
    async def get_one(subscription_id: str) -> SubscriptionView:
        async with connection() as conn:
            row = await store.get_subscription(conn, subscription_id)
        if row is None:
            raise _no_subscription(subscription_id)
        return _subscription(row)

    @routes.delete(
        "/v1/subscriptions/{subscription_id}",
        summary="Unsubscribe",
        description="Stops its deliveries at once (an attempt in flight still completes) and "
        "deletes its delivery log and secret.",
        status_code=204,
        response_class=Response,
        responses={404: _problem("No such subscription.")},
    )
    async def delete(subscription_id: str) -> Response:
        async with connection() as conn:
            deleted = await store.delete_subscription(conn, subscription_id)
        if not deleted:
            raise _no_subscription(subscription_id)
        return Response(status_code=204)

    @routes.get(
        "/v1/subscriptions/{subscription_id}/deliveries",
        summary="The delivery log of a subscription",
        description="Newest first, each with every attempt (status code, latency, error). "
        "`status=dead` lists what was given up; `before` pages back.",
        response_model=Deliveries,
        responses={404: _problem("No such subscription.")},
    )
    async def deliveries(
        subscription_id: str,
        status: Annotated[
            Literal["pending", "delivered", "dead"] | None, Query(description="Only these.")
        ] = None,
        before: Annotated[int | None, Query(description="Only ids below this one.")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Deliveries:
        async with connection() as conn:
            if await store.get_subscription(conn, subscription_id) is None:
                raise _no_subscription(subscription_id)
            rows = await store.list_deliveries(
                conn, subscription_id, status=status, before_id=before, limit=limit
            )
        return Deliveries(
            deliveries=[_delivery(r) for r in rows],
            next_before=rows[-1].id if len(rows) == limit else None,
        )

    @routes.post(
        "/v1/deliveries/{delivery_id}/replay",
        summary="Send one delivery again",
        description="A dead or delivered delivery is queued again with a fresh give-up clock "
        "(same event, same `webhook-id`); a pending one is made due now. It keeps its place in "
        "its member's queue, so that member's later deliveries wait for it.",
        status_code=202,
        response_model=DeliveryView,
        responses={404: _problem("No such delivery.")},
    )
    async def replay_one(delivery_id: int) -> DeliveryView:
        async with connection() as conn:
            found = await store.replay_delivery(conn, delivery_id)
            row = await store.get_delivery(conn, delivery_id) if found else None
        if row is None:
            raise ProblemError(
                404, DELIVERY_NOT_FOUND, "Delivery not found", f"no delivery {delivery_id}"
            )
        wake_sender()
        return _delivery(row)

    @routes.post(
        "/v1/subscriptions/{subscription_id}/replay",
        summary="Send again every delivery queued in a time range",
        description="Every delivered or dead delivery of the subscription queued in "
        "[since, until) is queued again (optionally only one status), each in its member's "
        "order.",
        status_code=202,
        response_model=Replayed,
        responses={
            404: _problem("No such subscription."),
            422: _problem("The window is invalid."),
        },
    )
    async def replay_window(subscription_id: str, window: ReplayWindow) -> Replayed:
        if window.since >= window.until:
            raise ProblemError(
                422, INVALID_REPLAY_WINDOW, "Invalid window", "`since` must be before `until`"
            )
        async with connection() as conn:
            if await store.get_subscription(conn, subscription_id) is None:
                raise _no_subscription(subscription_id)
            count = await store.replay_range(
                conn,
                subscription_id,
                since=window.since,
                until=window.until,
                status=window.status,
            )
        wake_sender()
        return Replayed(replayed=count)

    return routes
