"""`python -m services.awareness`: the awareness stage service."""

from pathlib import Path

from services.awareness.handlers import build_handler
from shared.service import ServiceSpec, run
from shared.topics import MEMBER_ACTIVITY

SPEC = ServiceSpec(
    name="awareness",
    consumes=(MEMBER_ACTIVITY,),
    migrations=Path(__file__).with_name("migrations"),
    build_handler=build_handler,
)

if __name__ == "__main__":
    run(SPEC)
