"""`python -m services.engagement`: the engagement stage service."""

from pathlib import Path

from services.engagement.handlers import build_handler
from shared.service import ServiceSpec, run
from shared.topics import MEMBER_ACTIVITY

SPEC = ServiceSpec(
    name="engagement",
    consumes=(MEMBER_ACTIVITY,),
    migrations=Path(__file__).with_name("migrations"),
    build_handler=build_handler,
)

if __name__ == "__main__":
    run(SPEC)
