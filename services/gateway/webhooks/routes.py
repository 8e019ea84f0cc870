"""POST /v1/webhooks/{github,discourse,slack} and GET /v1/webhooks/stats: the routes and
their OpenAPI documents (no API key: each platform's signature is the credential); what
happens to a delivery is `receiver.py`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from services.gateway.http import auth, problems
from services.gateway.ingest.publisher import ActivityPublisher
from services.gateway.webhooks.receiver import Receiver, Resolver, WebhookReceipt
from services.gateway.webhooks.stats import Clock, WebhookStats, WebhookStatsView, utcnow
from services.gateway.webhooks.store import WebhookStore
from shared.settings import Settings


def _doc(headers: Sequence[tuple[str, str]], body: str) -> dict[str, Any]:
    """The operation's OpenAPI: no API key (the signature is the credential), the headers
    the platform sends, a JSON body."""
    return {
        **auth.PUBLIC,
        "parameters": [
            {
                "name": name,
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": description,
            }
            for name, description in headers
        ],
        "requestBody": {
            "required": True,
            "description": body,
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
    }


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": WebhookReceipt, "description": "Acknowledged: ignored, or a duplicate."},
    202: {"model": WebhookReceipt, "description": "Published (acknowledged by the broker)."},
    400: problems.doc("Not JSON, or a mapped event without a field its mapping needs."),
    401: problems.doc("The signature is missing or does not match (or a stale Slack timestamp)."),
    404: problems.doc("This platform's secret is not configured on this gateway."),
    413: problems.doc("The body is too large."),
    503: problems.doc("The broker did not take the activities; the platform should retry."),
}


def router(
    *,
    publisher: ActivityPublisher,
    store: WebhookStore,
    settings: Settings,
    clock: Clock = utcnow,
    stats: WebhookStats | None = None,
    resolve: Resolver | None = None,
) -> APIRouter:
    """The webhook endpoints, publishing through `publisher`, remembering in `store`;
    `resolve` turns the mappers' derived member ids into the identity table's (the gateway's
    `IdentityStore.resolve_activities`; without it, the derived ids are published)."""
    receiver = Receiver(publisher, store, settings, clock, stats or WebhookStats(clock))
    receiver.resolve = resolve
    routes = APIRouter(tags=["webhooks"])

    @routes.post(
        "/v1/webhooks/github",
        summary="GitHub webhook deliveries",
        description="Issues, comments, pull requests and reviews, discussions, stars, forks, "
        "releases and collaborators, as activities (`source: github`). Authenticated by "
        "`X-Hub-Signature-256` with FLYWHEEL_GITHUB_WEBHOOK_SECRET; redeliveries (same "
        "`X-GitHub-Delivery`) are published once. Content type JSON or form (`payload=`).",
        responses=_RESPONSES,
        openapi_extra=_doc(
            [
                ("X-Hub-Signature-256", "`sha256=` + hex HMAC-SHA256 of the raw body."),
                ("X-GitHub-Event", "The event name, e.g. `issues`."),
                ("X-GitHub-Delivery", "The delivery's GUID (kept on redelivery)."),
            ],
            "The event's payload, as GitHub sends it.",
        ),
    )
    async def github(request: Request) -> JSONResponse:
        return await receiver.github(request)

    @routes.post(
        "/v1/webhooks/discourse",
        summary="Discourse webhook deliveries",
        description="Topics, replies, likes, sign-ups and accepted solutions (solved plugin) "
        "as activities (`source: discourse`). Authenticated by `X-Discourse-Event-Signature` "
        "with FLYWHEEL_DISCOURSE_WEBHOOK_SECRET; redeliveries (same `X-Discourse-Event-Id`) "
        "are published once.",
        responses=_RESPONSES,
        openapi_extra=_doc(
            [
                ("X-Discourse-Event-Signature", "`sha256=` + hex HMAC-SHA256 of the raw body."),
                ("X-Discourse-Event-Type", "The payload's type: topic, post, user, like, ..."),
                ("X-Discourse-Event", "The event, e.g. `post_created`."),
                ("X-Discourse-Event-Id", "The delivery's id (kept on redelivery)."),
            ],
            "`{<event type>: <payload>}`, as Discourse sends it.",
        ),
    )
    async def discourse(request: Request) -> JSONResponse:
        return await receiver.discourse(request)

    @routes.post(
        "/v1/webhooks/slack",
        summary="Slack Events API deliveries",
        description="Messages, thread replies, reactions, channel joins and workspace "
        "sign-ups as activities (`source: slack`). Authenticated by Slack's v0 signature "
        "(`X-Slack-Signature` over `v0:{X-Slack-Request-Timestamp}:{body}`, the timestamp "
        "within five minutes) with FLYWHEEL_SLACK_SIGNING_SECRET. Answers the "
        "`url_verification` challenge once the signature checks; retries (same `event_id`) "
        "are published once.",
        responses={
            **_RESPONSES,
            200: {
                "description": 'A receipt, or `{"challenge": ...}` for url_verification.',
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
        },
        openapi_extra=_doc(
            [
                ("X-Slack-Signature", "`v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}`."),
                ("X-Slack-Request-Timestamp", "Unix seconds; at most five minutes off."),
            ],
            "An Events API envelope (`event_callback` or `url_verification`).",
        ),
    )
    async def slack(request: Request) -> JSONResponse:
        return await receiver.slack(request)

    @routes.get(
        "/v1/webhooks/stats",
        summary="Webhook deliveries by source, event and outcome",
        description="What this process did with each platform's deliveries since it started: "
        "which events are published, which are ignored (not mapped), duplicates, and "
        "deliveries refused. Needs the `admin` scope.",
        response_model=WebhookStatsView,
        dependencies=[auth.require("admin")],
        responses={**auth.RESPONSES},
    )
    async def webhook_stats() -> WebhookStatsView:
        return receiver.stats.view()

    return routes
