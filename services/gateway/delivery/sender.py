"""The sender: POSTs queued deliveries, signed, retrying with back-off until they succeed or
die, one at a time per (subscription, member) so receivers see each member's events in order.

Every gateway replica runs one. They share the queue through PostgreSQL: a delivery is leased
(`FOR UPDATE SKIP LOCKED`) for at most one attempt in flight, the lease outlives the request
timeout, and only the lease holder records the outcome; a replica that dies mid-attempt leaves
a lease that expires, and the attempt is made again, with the same `webhook-id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg
import httpx

from services.gateway.delivery import store
from services.gateway.delivery.signing import STRUCTURED_CONTENT_TYPE, signature_headers
from services.gateway.delivery.targets import (
    GuardedTransport,
    TargetPolicy,
    TargetRefused,
    refusal_reason,
    sanitize,
)
from services.gateway.delivery.vault import PREFIX, SecretUnreadable, SecretVault
from shared.postgres import TRANSIENT_DB_ERRORS, Connection
from shared.settings import Settings

log = logging.getLogger(__name__)

USER_AGENT = "flywheel-webhooks/1.0"
EXCERPT_CHARS = 64
"""Of a receiver's answer, only this much is kept, sanitized: the delivery log is not a way to
read what an internal service answers."""
ERROR_CHARS = 200
PRUNE_INTERVAL_S = 600.0

AttemptOutcome = Literal["delivered", "retrying", "dead"]


@dataclass(frozen=True)
class AttemptReport:
    """One attempt, for metrics: by outcome and latency."""

    subscription_id: str
    event_type: str
    outcome: AttemptOutcome
    status_code: int | None
    latency_s: float


DeliveryObserver = Callable[[AttemptReport], None]


def backoff_s(attempt: int, *, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Full jitter (AWS architecture blog): uniform in [0, min(max, initial * 2^(attempt-1))],
    so receivers coming back from an outage are not hit by every sender at once."""
    cap = min(max_s, initial_s * 2.0 ** min(attempt - 1, 62))
    return rng.uniform(0.0, cap)


async def _head(response: httpx.Response) -> str:
    """A short, printable excerpt of a receiver's answer, for the log: never the whole of an
    unbounded body, never control characters."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= EXCERPT_CHARS * 4:
            break
    text = b"".join(chunks)[: EXCERPT_CHARS * 4].decode("utf-8", "replace")
    return sanitize(text, EXCERPT_CHARS)


class Sender:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        *,
        observer: DeliveryObserver = lambda _: None,
        client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
        policy: TargetPolicy | None = None,
        vault: SecretVault | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.policy = policy or TargetPolicy.from_settings(settings)
        self.vault = vault if vault is not None else SecretVault.from_settings(settings)
        self.observer = observer
        self._client = client
        self._own_client = client is None
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # long enough that a lease never expires under a live attempt
        self.lease_s = settings.webhook_timeout_s * 2 + 30.0

    def wake(self) -> None:
        """Something was queued or finished: look for due deliveries now."""
        self._wake.set()

    def start(self) -> None:
        if self._client is None:
            limits = httpx.Limits(max_connections=self.settings.webhook_max_in_flight)
            self._client = httpx.AsyncClient(
                # connects only to checked addresses of the URL's host (targets.py)
                transport=GuardedTransport(self.policy, limits=limits),
                follow_redirects=False,
                timeout=httpx.Timeout(self.settings.webhook_timeout_s),
                headers={"user-agent": USER_AGENT},
            )
        self._task = asyncio.create_task(self._run(), name="webhook-sender")

    def stop_claiming(self) -> None:
        """Shutting down: no new attempts from now on."""
        self._stopping = True
        self._wake.set()

    async def stop(self, timeout_s: float = 1.0) -> None:
        """No new attempts; those in flight get `timeout_s` to finish. One cut short is made
        again, with the same webhook-id, once its lease expires (by another replica, or by this
        one after a restart): receivers already tolerate that, so shutdown need not wait."""
        self.stop_claiming()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._in_flight:
            _, pending = await asyncio.wait(self._in_flight, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._client is not None and self._own_client:
            await self._client.aclose()

    async def _run(self) -> None:
        delay = self.settings.transient_retry_initial_s
        next_prune = time.monotonic()
        while not self._stopping:
            try:
                if time.monotonic() >= next_prune:
                    await self.prune()
                    next_prune = time.monotonic() + PRUNE_INTERVAL_S
                claimed = await self.claim_and_send()
                delay = self.settings.transient_retry_initial_s
            except asyncio.CancelledError:
                raise
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("webhook sender: database fault (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.transient_retry_max_s)
                continue
            if claimed and len(self._in_flight) < self.settings.webhook_max_in_flight:
                continue  # maybe more are due
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.webhook_poll_interval_s)

    async def prune(self) -> int:
        """The delivery log is kept `webhook_log_retention_days`; every replica prunes (the
        deletes are idempotent)."""
        async with self.pool.acquire() as conn:
            pruned = await store.prune(
                conn, older_than_s=self.settings.webhook_log_retention_days * 86_400
            )
        if pruned:
            log.info("webhook delivery log: pruned %d finished deliveries", pruned)
        return pruned

    async def claim_and_send(self) -> int:
        """Lease what is due (up to the free slots) and start an attempt for each."""
        free = self.settings.webhook_max_in_flight - len(self._in_flight)
        if free <= 0:
            return 0
        async with self.pool.acquire() as conn:
            claimed = await store.claim_due(conn, limit=free, lease_s=self.lease_s)
        for delivery in claimed:
            task = asyncio.create_task(self._guarded(delivery), name=f"webhook-{delivery.id}")
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        return len(claimed)

    async def _guarded(self, delivery: store.ClaimedDelivery) -> None:
        try:
            await self._attempt(delivery)
        except asyncio.CancelledError:
            raise
        except Exception:
            # its lease expires and the attempt is made again
            log.exception("webhook %s: attempt failed unexpectedly", delivery.id)

    async def _attempt(self, delivery: store.ClaimedDelivery) -> None:
        assert self._client is not None
        attempted_at = datetime.now(UTC)
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        try:
            secret = self._secret(delivery.secret)
            headers = {
                "content-type": STRUCTURED_CONTENT_TYPE,
                **signature_headers(secret, delivery.event_id, delivery.body, attempted_at),
            }
            self.policy.check_url(delivery.url)  # a subscription from before the rules
            async with self._client.stream(
                "POST", delivery.url, content=delivery.body.encode(), headers=headers
            ) as response:
                status_code = response.status_code
                if not 200 <= status_code < 300:
                    error = f"HTTP {status_code}: {await _head(response)}"
        except TargetRefused as exc:
            error = f"target refused: {exc.reason}"
        except SecretUnreadable as exc:
            error = str(exc)
        except httpx.TimeoutException as exc:
            error = f"timeout after {self.settings.webhook_timeout_s} s ({type(exc).__name__})"
        except httpx.HTTPError as exc:
            reason = refusal_reason(exc)
            error = (
                f"target refused: {reason}"
                if reason is not None
                else sanitize(f"{type(exc).__name__}: {exc}", ERROR_CHARS)
            )
        latency_s = time.perf_counter() - started
        outcome, next_at = self._judge(delivery, error is None)
        if error is not None:
            log.log(
                logging.WARNING if outcome == "dead" else logging.INFO,
                "webhook %s (%s) to %s attempt %d: %s; %s",
                delivery.id,
                delivery.event_id,
                delivery.subscription_id,
                delivery.attempt,
                error,
                "dead" if outcome == "dead" else f"next at {next_at}",
            )
        await self._record(
            delivery,
            lambda conn: store.record_attempt(
                conn,
                delivery,
                attempted_at=attempted_at,
                outcome=outcome,
                status_code=status_code,
                latency_ms=latency_s * 1000,
                error=error,
                next_attempt_at=next_at,
            ),
        )
        report_outcome: AttemptOutcome = "retrying" if outcome == "failed" else outcome
        try:
            self.observer(
                AttemptReport(
                    delivery.subscription_id,
                    delivery.event_type,
                    report_outcome,
                    status_code,
                    latency_s,
                )
            )
        except Exception:  # a metric must never stop deliveries
            log.exception("webhook delivery observer failed")
        self.wake()  # the member's next delivery may be due now

    def _secret(self, stored: str) -> str:
        if self.vault is not None:
            return self.vault.open(stored)
        if stored.startswith(PREFIX):
            raise SecretUnreadable(
                "the signing secret is encrypted and FLYWHEEL_SECRETS_KEYS is not set"
            )
        return stored

    def _judge(
        self, delivery: store.ClaimedDelivery, ok: bool
    ) -> tuple[store.Outcome, datetime | None]:
        if ok:
            return "delivered", None
        now = datetime.now(UTC)
        give_up_at = delivery.pending_since + timedelta(
            seconds=self.settings.webhook_give_up_after_s
        )
        if now >= give_up_at:
            return "dead", None
        wait = backoff_s(
            delivery.attempt,
            initial_s=self.settings.webhook_retry_initial_s,
            max_s=self.settings.webhook_retry_max_s,
            rng=self._rng,
        )
        return "failed", now + timedelta(seconds=wait)

    async def _record(
        self,
        delivery: store.ClaimedDelivery,
        write: Callable[[Connection], Awaitable[bool]],
    ) -> None:
        """The outcome must land, or the lease expires and the attempt is repeated (the
        receiver sees the same webhook-id again, which it tolerates)."""
        delay = self.settings.transient_retry_initial_s
        deadline = time.monotonic() + self.lease_s / 2
        while True:
            try:
                async with self.pool.acquire() as conn:
                    kept = await write(conn)
                if not kept:
                    log.info("webhook %s: lease lost (subscription deleted?)", delivery.id)
                return
            except TRANSIENT_DB_ERRORS as exc:
                if time.monotonic() > deadline:
                    log.warning("webhook %s: outcome not recorded (%s)", delivery.id, exc)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.transient_retry_max_s)
