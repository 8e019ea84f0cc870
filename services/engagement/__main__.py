"""`python -m services.engagement`: the engagement stage service."""

from pathlib import Path

from services.engagement.handlers import build_handler
from shared import lifecycle
from shared.contracts import (
    CHURN_RISK,
    NEWCOMER_DROP_OFF,
    PEER_HELP,
    PRODUCT_FEEDBACK,
    QUESTION_ANSWERED,
    QUESTION_UNANSWERED,
    STAGE_CHANGED,
)
from shared.service import ServiceSpec, run
from shared.topics import MEMBER_ACTIVITY, MEMBER_LIFECYCLE

SPEC = ServiceSpec(
    name="engagement",
    consumes=(MEMBER_ACTIVITY, MEMBER_LIFECYCLE),  # member-lifecycle: merges and erasures
    migrations=Path(__file__).with_name("migrations"),
    build_handler=build_handler,
    extra_migrations=(lifecycle.MIGRATIONS,),
    clock_topics=(MEMBER_ACTIVITY,),
    replay_tables=("participants", "questions", "newcomers", "inbox", "watermark", "event_clock"),
    emits=(
        STAGE_CHANGED,
        PEER_HELP,
        QUESTION_UNANSWERED,
        QUESTION_ANSWERED,
        CHURN_RISK,
        NEWCOMER_DROP_OFF,
        PRODUCT_FEEDBACK,
    ),
)

if __name__ == "__main__":
    run(SPEC)
