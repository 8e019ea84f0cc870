"""What the HTTP layer needs from the outside world, as protocols.

The API depends on these and nothing else, so tests drive it with in-memory fakes and the
process wires the real Kafka publisher and PostgreSQL read model (see `runtime.py`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from services.gateway.views import MemberJourney, StageCounts
from shared.cloudevents import OutgoingRecord

DEFAULT_RETRY_AFTER_S = 5


class Unavailable(Exception):
    """A dependency (the broker, the database) cannot serve now; the client should retry.

    Answered as 503 with Retry-After: the request was fine, so it is never the client's fault.
    """

    def __init__(self, dependency: str, detail: str, retry_after_s: int = DEFAULT_RETRY_AFTER_S):
        super().__init__(f"{dependency}: {detail}")
        self.dependency = dependency
        self.detail = detail
        self.retry_after_s = retry_after_s


class ActivityPublisher(Protocol):
    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        """Return only once the broker has acknowledged every record (acks=all).

        Raise `Unavailable` when it cannot; some records may then be written anyway, which is
        harmless: their event ids are derived from the activity, so a retry re-sends the very
        same events and consumers drop the duplicates.
        """
        ...


class JourneyReader(Protocol):
    async def member_journey(self, member_id: str) -> MemberJourney | None:
        """The member's current stages and timeline; None if no transition is known."""
        ...

    async def stage_counts(self) -> StageCounts: ...


ReadinessCheck = Callable[[], Awaitable[dict[str, str]]]
"""Returns {component: problem} for what is not ready; empty when ready."""
