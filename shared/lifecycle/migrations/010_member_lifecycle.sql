-- Merges and erasures (shared/lifecycle/): the same three tables in every service database
-- that applies member.merged.v1 and member.erased.v1. Plumbing shared by every service, like
-- the inbox and the outbox, in a schema of its own: no service's own state.
CREATE SCHEMA IF NOT EXISTS lifecycle;

-- A merged member id -> the member it was merged into (always the final survivor: a later
-- merge of the survivor repoints its aliases). Every event is read through it, so activity
-- still keyed by a merged id lands on the survivor.
CREATE TABLE IF NOT EXISTS lifecycle.member_aliases (
    merged_id   text PRIMARY KEY,
    survivor_id text NOT NULL,
    merged_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS member_aliases_survivor ON lifecycle.member_aliases (survivor_id);

-- Erased members, as a hash of the member id only (shared.lifecycle.member_hash): an event
-- about one of them, late or replayed from offset 0, is dropped instead of re-creating them.
CREATE TABLE IF NOT EXISTS lifecycle.erased_members (
    member_hash text PRIMARY KEY,
    erased_at   timestamptz NOT NULL
);

-- Set once a database has read the erasures already on member-lifecycle before its first
-- batch (a replay into a fresh database must know who was erased before it reads activity).
CREATE TABLE IF NOT EXISTS lifecycle.bootstrap (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    done_at   timestamptz NOT NULL DEFAULT now(),
    erasures  integer NOT NULL
);
