"""Member ids of people seen on a platform: the one place they are derived.

Today a member id is the platform and the person's stable id there (`github:583231`), never
a handle or an email, which people change. Linking one person's identities across platforms
(by verified email, or `POST /v1/members/{id}/identities`) is to replace this function with a
lookup; every mapper calls it, and keeps `platform_user_id` in the actor, so that swap needs
no change elsewhere.
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
