"""`python -m services.awareness`: the awareness stage service."""

from pathlib import Path

from services.awareness.handlers import build_handler
from shared import lifecycle
from shared.contracts import (
    FIRST_TOUCH,
    MEMBER_ACQUIRED,
    MEMBER_ERASED,
    PROSPECT_INTENT,
    STAGE_CHANGED,
)
from shared.service import ServiceSpec, run
from shared.topics import MEMBER_ACTIVITY, MEMBER_LIFECYCLE

SPEC = ServiceSpec(
    name="awareness",
    # member-lifecycle: merges and erasures (and its own events there, which it ignores)
    consumes=(MEMBER_ACTIVITY, MEMBER_LIFECYCLE),
    migrations=Path(__file__).with_name("migrations"),
    build_handler=build_handler,
    extra_migrations=(lifecycle.MIGRATIONS,),
    clock_topics=(MEMBER_ACTIVITY,),
    replay_tables=("people", "aliases", "inbox", "watermark", "event_clock"),
    # member.erased.v1: a person's anonymous visitor ids, which only awareness knows
    # member.first_touch.v1: how a member came, once the clock passed their joining
    emits=(STAGE_CHANGED, MEMBER_ACQUIRED, FIRST_TOUCH, MEMBER_ERASED, PROSPECT_INTENT),
)

if __name__ == "__main__":
    run(SPEC)
