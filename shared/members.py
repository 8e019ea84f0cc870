"""Member ids of people seen on a platform: the one place they are made.

A platform identity has two ids here. The mappers' id is the platform and the person's stable
id there (`github:583231`), never a handle or an email, which people change: the gateway's
webhook mappers build it, and so must anything else that turns platform data into activities
(a history importer), so the same person gets the very same id whoever saw them first. What
the log knows them by is its pseudonym (`pseudonym`): the gateway's identity resolver publishes
that instead, so no platform user id reaches a retained topic (docs/SECURITY.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
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


PSEUDONYM_PREFIX = "m-"


def pseudonym(key: bytes, platform: str, platform_user_id: str) -> str:
    """The member id the log knows a platform identity by: `m-` and 26 base32 characters of
    HMAC-SHA256(key, platform, user id). It names no one without the key and the gateway's
    identity tables, so once an erasure deleted the identity, what the person did stays in the
    retained topics under an id that leads nowhere (docs/SECURITY.md, "Erasure and the log").
    Keyed rather than random so the same history gives the same ids: a webhook redelivery of
    something imported, a replay, two gateway replicas, and the mention of someone not seen yet.
    """
    digest = hmac.new(key, f"{platform}\x1f{platform_user_id}".encode(), hashlib.sha256).digest()
    return PSEUDONYM_PREFIX + base64.b32encode(digest[:16]).decode().rstrip("=").lower()
