"""What this gateway process did with each platform's deliveries since it started, in
memory: GET /v1/webhooks/stats."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

Clock = Callable[[], datetime]
Outcome = Literal["accepted", "ignored", "duplicate", "rejected", "malformed", "unavailable"]


def utcnow() -> datetime:
    return datetime.now(UTC)


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

    def __init__(self, clock: Clock = utcnow) -> None:
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
