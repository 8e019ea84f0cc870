"""Identity: one member per person, merges and erasure, at the gateway.

`rules` is pure (email normal form, the hashes that block an erased person's identities),
`store` the identity tables' part of a merge and an erasure, `directory` the `IdentityStore`
(resolving platform users for the webhooks, linking, listing, erasing), `guard` the publisher
that drops erased people's activity, `routes` the operator endpoints, `models` their bodies.
"""

from services.gateway.identity import store
from services.gateway.identity.directory import IdentityStore
from services.gateway.identity.guard import GuardedPublisher
from services.gateway.identity.routes import router
from services.gateway.identity.rules import (
    Screened,
    email_hash,
    identity_hash,
    normalize_email,
    screen,
)
from shared.members import derived_member_id

__all__ = [
    "GuardedPublisher",
    "IdentityStore",
    "Screened",
    "derived_member_id",
    "email_hash",
    "identity_hash",
    "normalize_email",
    "router",
    "screen",
    "store",
]
