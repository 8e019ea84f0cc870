"""Member ids of people seen on a platform: the one place they are derived.

A member id derived here is the platform and the person's stable id there (`github:583231`),
never a handle or an email, which people change. The mappers stay pure: the router then
passes their activities through the gateway's identity resolver
(`services/gateway/identity.py`, `IdentityStore.resolve_activities`), which replaces these
derived ids with the member each identity belongs to (one member per person: joined by
verified email, or linked with `POST /v1/members/{id}/identities`). An identity seen for the
first time keeps this derived id, so the two agree until identities are linked.
"""

from __future__ import annotations

import re

_PLATFORM_ID = re.compile(r"^[A-Za-z0-9._@+=\-]{1,150}$")


class IdentityError(ValueError):
    """A platform user id this gateway cannot turn into a member id."""


def member_id(source: str, platform_user_id: str | int) -> str:
    """`<source>:<the person's id on the platform>`, e.g. `slack:U024BE7LH`."""
    user = str(platform_user_id)
    if not _PLATFORM_ID.match(user):
        raise IdentityError(f"{source} user id {user[:40]!r} is not a plain identifier")
    return f"{source}:{user}"
