"""Member ids of people seen on a platform: the one place they are made.

A member id derived from a platform identity is the platform and the person's stable id
there (`github:583231`), never a handle or an email, which people change. The gateway's
webhook mappers and its identity resolver build them here, and so must anything else that
turns platform data into activities (a history importer): the same person then gets the very
same id, whoever saw them first.
"""

from __future__ import annotations

import re

_PLATFORM_ID = re.compile(r"^[A-Za-z0-9._@+=\-]{1,150}$")


class IdentityError(ValueError):
    """A platform user id that cannot be turned into a member id."""


def derived_member_id(platform: str, platform_user_id: str) -> str:
    """`<platform>:<user id>`: the member id of an identity never linked to anyone else."""
    return f"{platform}:{platform_user_id}"


def member_id(source: str, platform_user_id: str | int) -> str:
    """`<source>:<the person's id on the platform>`, e.g. `slack:U024BE7LH`, after checking
    that the id is a plain identifier (what a mapper reads from a payload is not trusted)."""
    user = str(platform_user_id)
    if not _PLATFORM_ID.match(user):
        raise IdentityError(f"{source} user id {user[:40]!r} is not a plain identifier")
    return derived_member_id(source, user)
