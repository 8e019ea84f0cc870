"""The stage runtime with no stage in it: the floor under every stage service's catch-up.

    python -m bench.floor      (configured from the environment, as a service is)

The same `shared.service` runtime the three stages run on, consuming `member-activity` with
every guarantee on (strict decoding, the event-time clock, the inbox claimed in the batch's
transaction, the offsets committed after it, the outbox relay polling, metrics and traces),
and a batch handler that does nothing: no rules, no state, no lifecycle reads, nothing
emitted. Its rate, in the same run as the passthrough ceiling, is the most any stage written
on this runtime can reach; the distance between it and a stage is that stage's own work
(docs/PERFORMANCE.md, "What is measured": the floor).
"""

from __future__ import annotations

from shared.cloudevents import Envelope
from shared.consumer import BatchHandler
from shared.lifecycle import MIGRATIONS as LIFECYCLE_MIGRATIONS
from shared.service import ServiceSpec, run
from shared.settings import Settings
from shared.topics import MEMBER_ACTIVITY
from shared.uow import UnitOfWork


def build_handler(_settings: Settings) -> BatchHandler:
    async def nothing(_uow: UnitOfWork, _events: list[Envelope]) -> None:
        """Claimed, clocked, committed: and nothing else."""

    return nothing


SPEC = ServiceSpec(
    name="floor",
    consumes=(MEMBER_ACTIVITY,),
    # a stage's migrations add its state, and the floor has none: the plumbing (inbox, outbox,
    # clock) is applied for every service, and the lifecycle's tables, which every stage has,
    # stand in as its own
    migrations=LIFECYCLE_MIGRATIONS,
    build_handler=build_handler,
    clock_topics=(MEMBER_ACTIVITY,),
    replay_tables=("inbox", "watermark", "event_clock"),
)

if __name__ == "__main__":
    run(SPEC)
