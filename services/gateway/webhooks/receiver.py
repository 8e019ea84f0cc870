"""The shared receiver of platform webhook deliveries (the routes are `routes.py`).

For every delivery, in this order:

1. The platform's secret must be configured, else 404: the endpoint does not exist on this
   gateway. (Not 503: that invites the platform to retry for days something only an
   operator can fix, and a 404 is what a platform shows as "wrong URL or not set up".)
2. The body is read raw (size-limited) and its signature verified over those bytes: 401,
   and nothing else happens, when it is missing or wrong.
3. It is parsed and mapped: 400 when a mapped event lacks what the mapping needs; events not
   mapped are acknowledged 200 `ignored`. Nothing a platform sends makes a 5xx. A time more
   than `max_future_s` after the receipt is clamped to the receipt (`mapping.clamp_future`).
4. A delivery id already recorded is acknowledged 200 `duplicate` and not published again.
5. The activities are published (503 with Retry-After when the broker does not take them:
   the platform retries), then the delivery id is recorded, and 202 `accepted`.

The delivery store is an optimisation, not what makes redeliveries harmless: the activities'
event ids are derived from the platform objects, so the same delivery published twice (the
store down, two replicas racing) carries the same ids and consumers drop the copy. When the
store is unavailable the router therefore publishes anyway, and says so in the log.

It stays one module: the steps above are one sequence over one delivery, each platform's
envelope method feeding the same `_process`, and reading them apart would hide the order.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal
from urllib.parse import parse_qs

from fastapi import Request
from pydantic import BaseModel, Field, ValidationError
from starlette.responses import JSONResponse

from services.gateway.http.problems import (
    MALFORMED_BODY,
    TYPE_PREFIX,
    ProblemError,
    Unavailable,
    json_pointer,
)
from services.gateway.http.views import FieldError
from services.gateway.ingest import intake
from services.gateway.ingest.publisher import ActivityPublisher
from services.gateway.webhooks.discourse import map_discourse
from services.gateway.webhooks.github import map_github
from services.gateway.webhooks.mapping import (
    CLAMPED_FROM,
    Delivery,
    Malformed,
    Mapped,
    ThreadStarter,
    clamp_future,
    web_url,
)
from services.gateway.webhooks.signatures import (
    SignatureError,
    verify_discourse,
    verify_github,
    verify_slack,
)
from services.gateway.webhooks.slack import map_slack
from services.gateway.webhooks.stats import Clock, WebhookStats
from services.gateway.webhooks.store import WebhookStore
from shared import metrics
from shared.contracts import ActivityV1
from shared.settings import Settings

log = logging.getLogger(__name__)

NOT_CONFIGURED = TYPE_PREFIX + "webhook-not-configured"
BAD_SIGNATURE = TYPE_PREFIX + "webhook-signature"
UNMAPPABLE = TYPE_PREFIX + "webhook-unmappable"

Resolver = Callable[[str, list[ActivityV1]], Awaitable[list[ActivityV1]]]
"""(platform, mapped activities) -> the same activities with member ids from the identities."""

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+=\-]{0,127}$")
_SECRETS = {
    "github": ("github_webhook_secret", "FLYWHEEL_GITHUB_WEBHOOK_SECRET"),
    "discourse": ("discourse_webhook_secret", "FLYWHEEL_DISCOURSE_WEBHOOK_SECRET"),
    "slack": ("slack_signing_secret", "FLYWHEEL_SLACK_SIGNING_SECRET"),
}


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


def _receipt(status: int, receipt: WebhookReceipt) -> JSONResponse:
    return JSONResponse(receipt.model_dump(mode="json", exclude_none=True), status_code=status)


class Receiver:
    """The shared receiver: every platform's delivery through the same steps (module doc)."""

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
            self.settings.inbound_webhook_max_bytes,
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
            await self._remember_starters(source, mapped)
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
        activities, clamped = clamp_future(
            mapped.activities,
            received_at=delivery.received_at,
            max_future_s=self.settings.max_future_s,
        )
        if clamped:
            metrics.record_time_clamped(source, clamped)
            log.warning(
                "%s %s %s: %d activity time(s) more than %g s after the delivery's receipt, "
                "published at the receipt time (properties.%s keeps the original)",
                source,
                name,
                delivery.delivery_id,
                clamped,
                self.settings.max_future_s,
                CLAMPED_FROM,
            )
        if self.resolve is not None:  # one member per person: services/gateway/identity/
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

    async def _remember_starters(self, source: str, mapped: Mapped) -> None:
        """What an activity-less delivery said about who started threads (best effort: a
        missing staff flag means help given to that starter counts as peer help)."""
        if not mapped.thread_starters:
            return
        try:
            await self.store.remember_starters(source, mapped.thread_starters)
        except Unavailable as exc:
            log.warning("thread starters not remembered (%s): %s", exc, source)

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
        opening = {
            a.target.thread_id: ThreadStarter(
                a.actor.member_id, is_question=True if a.properties.get("question") else None
            )
            for a in activities
            if a.kind == "post" and a.target is not None and a.target.thread_id
        }
        unflagged = {
            a.target.thread_id
            for a in activities
            if a.kind != "post"
            and a.target is not None
            and a.target.thread_id
            and (
                a.target.thread_author_is_team_member is None or a.target.thread_is_question is None
            )
        }
        known = dict(started)
        flags: dict[str, ThreadStarter] = {}
        try:
            if unknown:
                known |= await self.store.thread_authors(source, unknown)
            if unflagged:
                flags = await self.store.starters(source, unflagged)
            if any(s.is_question for s in opening.values()):
                await self.store.remember_starters(
                    source, {t: s for t, s in opening.items() if s.is_question}
                )
        except Unavailable as exc:
            log.warning("thread authors unavailable (%s): replies go without them", exc)
        filled: list[ActivityV1] = []
        for a in activities:
            t = a.target
            if t is None or not t.thread_id:
                filled.append(a)
                continue
            update: dict[str, Any] = {}
            author = known.get(t.thread_id)
            if author is not None and not t.thread_author_member_id:
                update["thread_author_member_id"] = author
                if a.kind == "reply" and t.parent_id is None and t.parent_author_member_id is None:
                    update["parent_author_member_id"] = author  # a reply to the thread itself
            starter = flags.get(t.thread_id)
            if (
                starter is not None
                and starter.is_staff is not None
                and t.thread_author_is_team_member is None
            ):
                update["thread_author_is_team_member"] = starter.is_staff
            if starter is not None and starter.is_question and t.thread_is_question is None:
                update["thread_is_question"] = True
            filled.append(
                a.model_copy(update={"target": t.model_copy(update=update)}) if update else a
            )
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
