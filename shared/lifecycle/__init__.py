"""Merges and erasures, applied the same way by every service that keeps state about members.

`member.merged.v1` (two member ids are one person) and `member.erased.v1` (forget a person)
travel on `member-lifecycle`. A service wraps its batch handler in `with_lifecycle`, which:

- reads every event of the batch through the service's `lifecycle.member_aliases` (a merged
  id is read as its survivor) and `lifecycle.erased_members` (an event about an erased member
  is dropped; a mention of one in someone else's event is removed), so late activity keyed by
  a merged id lands on the survivor and nothing re-creates an erased person, live or in a
  replay;
- cuts the batch at each merge or erasure: the events before it are applied, then the
  service's own merge or erase rule, then the events after it, all in the batch's transaction;
- before a database's first batch, reads the erasures already on `member-lifecycle`
  (`ErasureBootstrap`), so a replay of `member-activity` from offset 0 into a fresh database
  never re-creates, even for a moment, a person erased later in the log.

One module per concern: `rewrite` (pure: reading events through aliases and erasures),
`store` (the SQL of the `lifecycle` schema), `bootstrap` (the raw consumer of the log) and
`handler` (`with_lifecycle`). This package exports what services use, so `from shared import
lifecycle` and `lifecycle.X` read the same everywhere.

What a merge or an erasure does to a service's own state is that service's rule (its
`domain.py` and `store.py`); this package only knows member ids.
"""

from pathlib import Path

from shared.lifecycle.bootstrap import ErasureBootstrap, read_lifecycle, topic_partitions
from shared.lifecycle.handler import EraseHandler, MergeHandler, with_lifecycle
from shared.lifecycle.rewrite import (
    ERASED,
    Erasure,
    Members,
    Merge,
    canonical,
    canonical_envelope,
    erased_in_log,
    member_hash,
    member_ids,
    mentioned,
    merge_of,
    scrub,
)
from shared.lifecycle.store import (
    is_erased,
    load_members,
    merged_into,
    record_erasure,
    record_merge,
)

MIGRATIONS = Path(__file__).with_name("migrations")
"""Schema `lifecycle` (member_aliases, erased_members, bootstrap): a spec's extra migrations."""

__all__ = [
    "ERASED",
    "MIGRATIONS",
    "EraseHandler",
    "Erasure",
    "ErasureBootstrap",
    "Members",
    "Merge",
    "MergeHandler",
    "canonical",
    "canonical_envelope",
    "erased_in_log",
    "is_erased",
    "load_members",
    "member_hash",
    "member_ids",
    "mentioned",
    "merge_of",
    "merged_into",
    "read_lifecycle",
    "record_erasure",
    "record_merge",
    "scrub",
    "topic_partitions",
    "with_lifecycle",
]
