"""POST /v1/webhooks/{github,discourse,slack}, and GET /v1/webhooks/stats.

For every delivery, in this order:

1. The platform's secret must be configured, else 404: the endpoint does not exist on this
   gateway. (Not 503: that invites the platform to retry for days something only an
   operator can fix, and a 404 is what a platform shows as "wrong URL or not set up".)
2. The body is read raw (size-limited) and its signature verified over those bytes: 401,
   and nothing else happens, when it is missing or wrong.
3. It is parsed and mapped: 400 when a mapped event lacks what the mapping needs; events not
   mapped are acknowledged 200 `ignored`. Nothing a platform sends makes a 5xx.
4. A delivery id already recorded is acknowledged 200 `duplicate` and not published again.
5. The activities are published (503 with Retry-After when the broker does not take them:
   the platform retries), then the delivery id is recorded, and 202 `accepted`.

The delivery store is an optimisation, not what makes redeliveries harmless: the activities'
event ids are derived from the platform objects, so the same delivery published twice (the
store down, two replicas racing) carries the same ids and consumers drop the copy. When the
store is unavailable the router therefore publishes anyway, and says so in the log.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.responses import JSONResponse

from services.gateway import auth, intake
from services.gateway.ports import ActivityPublisher, Unavailable
from services.gateway.problems import (
    MALFORMED_BODY,
    PROBLEM_JSON,
    TYPE_PREFIX,
    ProblemError,
    json_pointer,
)
from services.gateway.views import FieldError, Problem
from services.gateway.webhooks.discourse import map_discourse
from services.gateway.webhooks.github import map_github
from services.gateway.webhooks.mapping import Delivery, Malformed, Mapped, web_url
from services.gateway.webhooks.signatures import (
    SignatureError,
    verify_discourse,
    verify_github,
    verify_slack,
)
from services.gateway.webhooks.slack import map_slack
from services.gateway.webhooks.store import WebhookStore
from shared.contracts import ActivityV1
from shared.settings import Settings

log = logging.getLogger(__name__)

NOT_CONFIGURED = TYPE_PREFIX + "webhook-not-configured"
BAD_SIGNATURE = TYPE_PREFIX + "webhook-signature"
UNMAPPABLE = TYPE_PREFIX + "webhook-unmappable"

Clock = Callable[[], datetime]
Resolver = Callable[[str, list[ActivityV1]], Awaitable[list[ActivityV1]]]
"""(platform, mapped activities) -> the same activities with member ids from the identities."""
Outcome = Literal["accepted", "ignored", "duplicate", "rejected", "malformed", "unavailable"]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+=\-]{0,127}$")
_SECRETS = {
    "github": ("github_webhook_secret", "FLYWHEEL_GITHUB_WEBHOOK_SECRET"),
    "discourse": ("discourse_webhook_secret", "FLYWHEEL_DISCOURSE_WEBHOOK_SECRET"),
    "slack": ("slack_signing_secret", "FLYWHEEL_SLACK_SIGNING_SECRET"),
}


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- what the endpoints answer -----------------------------------------------------------------


class WebhookReceipt(BaseModel):
    """What became of one delivery."""

    status: Literal["accepted", "ignored", "duplicate"]
    source: str
    event: str = Field(description="The platform's event, with its action: `issues.opened`.")
    delivery_id: str | None = None
    activities: list[str] = Field(
        default_factory=list, description="Ids of the activities published (accepted)."
    )
    reason: str | None = Field(default=None, description="Why nothing was published.")


class WebhookStatsView(BaseModel):
    """Deliveries this gateway process handled since it started, per source and event."""

    since: datetime
    sources: dict[str, dict[str, dict[str, int]]] = Field(
        description="source -> event -> outcome (accepted, ignored, duplicate, rejected, "
        "malformed, unavailable) -> deliveries. Rejected deliveries (bad signature) are "
        "counted under event `-`: their event name is not trusted."
    )


class WebhookStats:
    """Counters per source, event and outcome, in memory (per process, since its start)."""

    def __init__(self, clock: Clock = _utcnow) -> None:
        self.since = clock()
        self._counts: defaultdict[str, defaultdict[str, Counter[str]]] = defaultdict(
            lambda: defaultdict(Counter)
        )

    def count(self, source: str, event: str, outcome: Outcome) -> None:
        self._counts[source][event][outcome] += 1

    def get(self, source: str, event: str, outcome: Outcome) -> int:
        events = self._counts.get(source)
        outcomes = events.get(event) if events is not None else None
        return outcomes[outcome] if outcomes is not None else 0

    def view(self) -> WebhookStatsView:
        return WebhookStatsView(
            since=self.since,
            sources={
                source: {event: dict(outcomes) for event, outcomes in sorted(events.items())}
                for source, events in sorted(self._counts.items())
            },
        )


def _receipt(status: int, receipt: WebhookReceipt) -> JSONResponse:
    return JSONResponse(receipt.model_dump(mode="json", exclude_none=True), status_code=status)


def _problem_doc(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "model": Problem,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


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
    400: _problem_doc("Not JSON, or a mapped event without a field its mapping needs."),
    401: _problem_doc("The signature is missing or does not match (or a stale Slack timestamp)."),
    404: _problem_doc("This platform's secret is not configured on this gateway."),
    413: _problem_doc("The body is too large."),
    503: _problem_doc("The broker did not take the activities; the platform should retry."),
}


# --- the router --------------------------------------------------------------------------------


def router(
    *,
    publisher: ActivityPublisher,
    store: WebhookStore,
    settings: Settings,
    clock: Clock = _utcnow,
    stats: WebhookStats | None = None,
    resolve: Resolver | None = None,
) -> APIRouter:
    """The webhook endpoints, publishing through `publisher`, remembering in `store`;
    `resolve` turns the mappers' derived member ids into the identity table's (the gateway's
    `IdentityStore.resolve_activities`; without it, the derived ids are published)."""
    receiver = _Receiver(publisher, store, settings, clock, stats or WebhookStats(clock))
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


class _Receiver:
    def __init__(
        self,
        publisher: ActivityPublisher,
        store: WebhookStore,
        settings: Settings,
        clock: Clock,
        stats: WebhookStats,
    ) -> None:
        self.publisher = publisher
        self.store = store
        self.settings = settings
        self.clock = clock
        self.stats = stats
        self.resolve: Resolver | None = None

    # --- steps 1 and 2: configured, and signed ---------------------------------------------

    def _secret(self, source: str) -> str:
        field, variable = _SECRETS[source]
        secret = getattr(self.settings, field)
        if secret is None or not secret.get_secret_value():
            raise ProblemError(
                404,
                NOT_CONFIGURED,
                "Webhook not configured",
                f"{source} webhooks are not enabled on this gateway: its operator sets "
                f"{variable} to the webhook's secret to enable them",
            )
        return str(secret.get_secret_value())

    async def _signed_body(
        self, request: Request, source: str, verify: Callable[[str, bytes], None]
    ) -> bytes:
        secret = self._secret(source)
        raw = await intake.read_body(
            request.headers.get("content-length"),
            request.stream(),
            self.settings.max_request_bytes,
        )
        try:
            verify(secret, raw)
        except SignatureError as exc:
            self.stats.count(source, "-", "rejected")
            log.warning("%s webhook refused: %s", source, exc)
            raise ProblemError(
                401,
                BAD_SIGNATURE,
                "Webhook signature invalid",
                f"{exc}; nothing was accepted",
                None,
                {"WWW-Authenticate": f'Signature realm="{source}"'},
            ) from None
        return raw

    # --- step 3: the platforms' envelopes ---------------------------------------------------

    async def github(self, request: Request) -> JSONResponse:
        headers = request.headers
        raw = await self._signed_body(
            request, "github", lambda secret, body: verify_github(secret, body, headers)
        )
        event = _name(headers.get("x-github-event"), "X-GitHub-Event")
        delivery_id = _delivery_id(headers.get("x-github-delivery"), "X-GitHub-Delivery")
        payload = _github_payload(raw, headers.get("content-type"))
        action = payload.get("action")
        delivery = Delivery(
            "github",
            event,
            action if isinstance(action, str) and _NAME.match(action) else None,
            delivery_id,
            payload,
            self.clock(),
        )
        return await self._process(delivery, map_github)

    async def discourse(self, request: Request) -> JSONResponse:
        headers = request.headers
        raw = await self._signed_body(
            request, "discourse", lambda secret, body: verify_discourse(secret, body, headers)
        )
        event_type = _name(headers.get("x-discourse-event-type"), "X-Discourse-Event-Type")
        event = (
            _name(headers.get("x-discourse-event"), "X-Discourse-Event")
            if headers.get("x-discourse-event")
            else event_type  # ping has no event name
        )
        delivery_id = _delivery_id(headers.get("x-discourse-event-id"), "X-Discourse-Event-Id")
        delivery = Delivery(
            "discourse",
            event,
            None,
            delivery_id,
            _json_object(raw),
            self.clock(),
            base_url=web_url(headers.get("x-discourse-instance")),
        )
        return await self._process(delivery, map_discourse)

    async def slack(self, request: Request) -> JSONResponse:
        headers = request.headers
        now = self.clock().timestamp()
        raw = await self._signed_body(
            request, "slack", lambda secret, body: verify_slack(secret, body, headers, now=now)
        )
        payload = _json_object(raw)
        kind = payload.get("type")
        if kind == "url_verification":
            challenge = payload.get("challenge")
            if not isinstance(challenge, str) or not challenge:
                raise _malformed("slack", "url_verification", "/challenge", "expected a string")
            self.stats.count("slack", "url_verification", "accepted")
            return JSONResponse({"challenge": challenge})
        if kind != "event_callback":
            name = kind if isinstance(kind, str) and _NAME.match(kind) else "other"
            self.stats.count("slack", name, "ignored")
            return _receipt(
                200,
                WebhookReceipt(
                    status="ignored",
                    source="slack",
                    event=name,
                    reason=f"an envelope of type {name}, not an event_callback",
                ),
            )
        event = payload.get("event")
        event_type = event.get("type") if isinstance(event, dict) else None
        if not isinstance(event_type, str) or not _NAME.match(event_type):
            raise _malformed("slack", "event_callback", "/event/type", "expected an event type")
        subtype = event.get("subtype") if isinstance(event, dict) else None
        event_id = payload.get("event_id")
        if not isinstance(event_id, str) or not _DELIVERY_ID.match(event_id):
            raise _malformed("slack", event_type, "/event_id", "expected the event's id")
        delivery = Delivery(
            "slack",
            event_type,
            subtype if isinstance(subtype, str) and _NAME.match(subtype) else None,
            event_id,
            payload,
            self.clock(),
        )
        return await self._process(delivery, map_slack)

    # --- steps 3 to 5: map, deduplicate, publish, remember ----------------------------------

    async def _process(
        self, delivery: Delivery, mapper: Callable[[Delivery], Mapped]
    ) -> JSONResponse:
        source, name = delivery.source, delivery.name
        try:
            mapped = mapper(delivery)
        except Malformed as exc:
            self.stats.count(source, name, "malformed")
            raise _malformed(source, name, exc.pointer, exc.detail) from None
        except ValidationError as exc:
            self.stats.count(source, name, "malformed")
            errors = [
                FieldError(pointer=json_pointer(e["loc"]), detail=e["msg"])
                for e in exc.errors(include_url=False, include_input=False, include_context=False)
            ]
            raise ProblemError(
                400,
                UNMAPPABLE,
                "Webhook payload not mappable",
                f"the {source} {name} delivery maps to an invalid activity; nothing was accepted",
                errors,
            ) from None
        receipt = WebhookReceipt(
            status="ignored", source=source, event=name, delivery_id=delivery.delivery_id
        )
        if mapped.ignored is not None or not mapped.activities:
            self.stats.count(source, name, "ignored")
            log.debug("%s %s %s ignored: %s", source, name, delivery.delivery_id, mapped.ignored)
            return _receipt(200, receipt.model_copy(update={"reason": mapped.ignored}))
        if await self._seen(delivery):
            self.stats.count(source, name, "duplicate")
            log.info(
                "%s %s %s: a redelivery, not published again", source, name, delivery.delivery_id
            )
            return _receipt(
                200,
                receipt.model_copy(
                    update={"status": "duplicate", "reason": "this delivery was published already"}
                ),
            )
        activities = mapped.activities
        if self.resolve is not None:  # one member per person: services/gateway/identity.py
            activities = await self.resolve(source, activities)
        activities, started = await self._with_thread_authors(source, activities)
        records = intake.to_records(activities, batch=True)
        try:
            await self.publisher.publish(records)
        except Unavailable:
            self.stats.count(source, name, "unavailable")
            raise
        ids = [a.activity_id for a in activities]
        try:
            await self.store.record(source, delivery.delivery_id, name, ids, started)
        except Unavailable as exc:
            log.warning(
                "%s %s %s published but not recorded (%s): a redelivery will be published "
                "again, with the same event ids",
                source,
                name,
                delivery.delivery_id,
                exc,
            )
        self.stats.count(source, name, "accepted")
        log.info("%s %s %s: published %s", source, name, delivery.delivery_id, ", ".join(ids))
        return _receipt(202, receipt.model_copy(update={"status": "accepted", "activities": ids}))

    async def _seen(self, delivery: Delivery) -> bool:
        try:
            return await self.store.seen(delivery.source, delivery.delivery_id)
        except Unavailable as exc:
            log.warning(
                "webhook store unavailable (%s): %s %s published without the redelivery check "
                "(its event ids are stable: consumers drop a copy)",
                exc,
                delivery.source,
                delivery.delivery_id,
            )
            return False

    async def _with_thread_authors(
        self, source: str, activities: list[ActivityV1]
    ) -> tuple[list[ActivityV1], dict[str, str]]:
        """Fill in who started a thread where the payload did not say; return the threads
        these activities start, to remember."""
        started = {
            a.target.thread_id: a.actor.member_id
            for a in activities
            if a.kind == "post" and a.target is not None and a.target.thread_id
        }
        unknown = {
            a.target.thread_id
            for a in activities
            if a.target is not None and a.target.thread_id and not a.target.thread_author_member_id
        } - set(started)
        known = dict(started)
        if unknown:
            try:
                known |= await self.store.thread_authors(source, unknown)
            except Unavailable as exc:
                log.warning("thread authors unavailable (%s): replies go without them", exc)
        filled: list[ActivityV1] = []
        for a in activities:
            t = a.target
            author = known.get(t.thread_id) if t is not None and t.thread_id else None
            if t is None or author is None or t.thread_author_member_id:
                filled.append(a)
                continue
            update: dict[str, Any] = {"thread_author_member_id": author}
            if a.kind == "reply" and t.parent_id is None and t.parent_author_member_id is None:
                update["parent_author_member_id"] = author  # a reply to the thread itself
            filled.append(a.model_copy(update={"target": t.model_copy(update=update)}))
        return filled, started


# --- parsing helpers -------------------------------------------------------------------------


def _malformed(source: str, event: str, pointer: str, detail: str) -> ProblemError:
    return ProblemError(
        400,
        MALFORMED_BODY,
        "Malformed webhook payload",
        f"the {source} {event} delivery cannot be read: {pointer or '/'}: {detail}; nothing "
        "was accepted",
        [FieldError(pointer=pointer, detail=detail)],
    )


def _name(value: str | None, header: str) -> str:
    if not value or not _NAME.match(value.strip()):
        raise ProblemError(
            400, MALFORMED_BODY, "Malformed webhook delivery", f"{header} is missing or invalid"
        )
    return value.strip()


def _delivery_id(value: str | None, header: str) -> str:
    if not value or not _DELIVERY_ID.match(value.strip()):
        raise ProblemError(
            400,
            MALFORMED_BODY,
            "Malformed webhook delivery",
            f"{header} is missing or not an id: redeliveries could not be recognised",
        )
    return value.strip()


def _json_object(raw: bytes) -> dict[str, Any]:
    body = intake.parse_json(raw)
    if not isinstance(body, dict):
        raise ProblemError(
            400, MALFORMED_BODY, "Malformed webhook payload", "the body must be a JSON object"
        )
    return body


def _github_payload(raw: bytes, content_type: str | None) -> dict[str, Any]:
    """GitHub sends JSON, or (a hook's choice) a form whose `payload` field is the JSON."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        return _json_object(raw)
    try:
        form = parse_qs(raw.decode(), strict_parsing=True)
        return _json_object(form["payload"][0].encode())
    except (UnicodeDecodeError, ValueError, KeyError, IndexError):
        raise ProblemError(
            400,
            MALFORMED_BODY,
            "Malformed webhook payload",
            "a form-encoded GitHub delivery needs a `payload` field holding the JSON",
        ) from None
