"""The member directory: who is in the community, where they are in the journey, and what
they did, for community teams, CRMs and support tools.

The read model keeps, per member, what the directory filters on (`directory_members`: stages,
score, platforms, joined, last active, handle), the last activities, contributions per kind,
advocacy signals and weekly stage flows (migration 006), projected from member-activity,
journey-transitions and signals.advocacy (`projection`). `query` is the pure part (parameters,
cursors, SQL, CSV cells), `store` the SQL reads, `reader.Directory` the reads over the pool
that the API (`routes`) and the dashboard share, `models` the bodies.
"""

from services.gateway.directory.projection import erase_members, merge_member, project_directory
from services.gateway.directory.reader import Directory
from services.gateway.directory.routes import router
from services.gateway.directory.store import cohort_retention

__all__ = [
    "Directory",
    "cohort_retention",
    "erase_members",
    "merge_member",
    "project_directory",
    "router",
]
