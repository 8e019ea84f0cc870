"""The bodies of the identity routes (they also document them in /openapi.json)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts import Platform


class Linked(BaseModel):
    model_config = ConfigDict(frozen=True)

    member_id: str = Field(
        description="The member the identity belongs to now (a merged id's survivor)."
    )
    platform: str
    platform_user_id: str
    email_linked: bool = Field(description="Whether a verified email was linked too.")
    merged: list[str] = Field(
        description="Member ids found to be this person and merged into it (member.merged.v1 "
        "published for each)."
    )


class IdentityView(BaseModel):
    model_config = ConfigDict(frozen=True)

    platform: str
    platform_user_id: str
    linked_by: str = Field(description="first_seen, email or operator.")
    linked_at: datetime


class MemberIdentities(BaseModel):
    model_config = ConfigDict(frozen=True)

    member_id: str
    merged_ids: list[str] = Field(description="Member ids merged into this one.")
    identities: list[IdentityView]
    emails: list[str] = Field(description="Verified emails (personal data: admin only).")


class Erased(BaseModel):
    model_config = ConfigDict(frozen=True)

    member_id: str = Field(description="The member erased (a merged id's survivor).")
    erased_ids: list[str] = Field(description="It and every member id merged into it.")
    identities_blocked: int = Field(
        description="Platform identities and emails now blocked (kept as hashes only)."
    )


class LinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    platform: Platform = Field(description="The activity source the identity lives on.")
    platform_user_id: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="The person's stable id there (never a handle: handles change)."
    )
    email: Annotated[str, Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None = Field(
        default=None, description="A verified email of the person, linked too."
    )


class Found(BaseModel):
    model_config = ConfigDict(frozen=True)

    member_id: str = Field(description="The member the identity or email belongs to.")
