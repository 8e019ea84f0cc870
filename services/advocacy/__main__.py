"""`python -m services.advocacy`: the advocacy stage service.

It reads community activity, engagement's peer-help signals and stage changes (a referral is
credited once the member it brought in becomes engaged) and awareness's member-acquired events:
every source of credit for helping the community grow; engagement's product feedback (a
champion's is flagged); and merges and erasures (member-lifecycle).
"""

from pathlib import Path

from services.advocacy.handlers import build_handler
from shared import lifecycle
from shared.contracts import ADVOCATE, CHAMPION_FEEDBACK, CHAMPION_NOMINATED, STAGE_CHANGED
from shared.service import ServiceSpec, run
from shared.topics import (
    JOURNEY_TRANSITIONS,
    MEMBER_ACTIVITY,
    MEMBER_LIFECYCLE,
    SIGNALS_PRODUCT,
    SIGNALS_SUPPORT,
)

# every input is on the clock: engagement's and awareness's topics carry their watermarks
INPUTS = (MEMBER_ACTIVITY, SIGNALS_SUPPORT, MEMBER_LIFECYCLE, JOURNEY_TRANSITIONS, SIGNALS_PRODUCT)

SPEC = ServiceSpec(
    name="advocacy",
    consumes=INPUTS,
    migrations=Path(__file__).with_name("migrations"),
    build_handler=build_handler,
    extra_migrations=(lifecycle.MIGRATIONS,),
    clock_topics=INPUTS,
    replay_tables=(
        "advocacy_members",
        "contributions",
        "review_clock",
        "pending_contributions",
        "referrals",
        "pending_feedback",
        "inbox",
        "watermark",
        "event_clock",
    ),
    emits=(STAGE_CHANGED, ADVOCATE, CHAMPION_NOMINATED, CHAMPION_FEEDBACK),
)

if __name__ == "__main__":
    run(SPEC)
