-- Who is who (services/gateway/identity.py): every platform identity and verified email of a
-- person resolves to one member id. Merges and erasures also use `member_aliases` and
-- `erased_members` (shared/lifecycle_migrations).

CREATE TABLE IF NOT EXISTS identities (
    platform         text NOT NULL,          -- the activity source: github, discourse, slack...
    platform_user_id text NOT NULL,          -- the person's stable id there (never a handle)
    member_id        text NOT NULL,
    linked_by        text NOT NULL CHECK (linked_by IN ('first_seen', 'email', 'operator')),
    linked_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (platform, platform_user_id)
);
CREATE INDEX IF NOT EXISTS identities_member ON identities (member_id);

-- Verified emails only (a platform that vouches for the address, or an operator).
CREATE TABLE IF NOT EXISTS identity_emails (
    email     text PRIMARY KEY,                 -- trimmed, lower case
    member_id text NOT NULL,
    linked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS identity_emails_member ON identity_emails (member_id);

-- Identities and emails of erased members, as hashes only: activity from them is acknowledged
-- and not published, and they are never linked to a member again.
CREATE TABLE IF NOT EXISTS blocked_identities (
    identity_hash text PRIMARY KEY,
    blocked_at    timestamptz NOT NULL
);
