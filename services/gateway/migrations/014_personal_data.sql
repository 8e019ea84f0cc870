-- Personal data stays here, out of the Kafka logs (docs/SECURITY.md, "Erasure and the log").
--
-- pseudonym_key: the key of the member ids the gateway gives platform identities
-- (`shared.members.pseudonym`). Its fingerprint is kept so a gateway started with another key
-- refuses to start (every member id would change); the key itself only when the gateway
-- generated it, FLYWHEEL_PSEUDONYM_KEY being unset.
CREATE TABLE IF NOT EXISTS pseudonym_key (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    key text,
    fingerprint text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- member_handles: the latest handle each member was seen with, for the directory and the
-- dashboard. Published activities carry no handle; an erasure deletes the row.
CREATE TABLE IF NOT EXISTS member_handles (
    member_id text PRIMARY KEY,
    handle text NOT NULL,
    seen_at timestamptz NOT NULL
);

-- The directory's handles until now came from the activities (which carried them): kept.
INSERT INTO member_handles (member_id, handle, seen_at)
SELECT member_id, handle, last_active_at FROM directory_members WHERE handle IS NOT NULL
ON CONFLICT (member_id) DO NOTHING;
ALTER TABLE directory_members DROP COLUMN IF EXISTS handle;
-- the directory's search: prefixes of the handle (its index moves with the column)
CREATE INDEX IF NOT EXISTS member_handles_prefix ON member_handles (lower(handle) text_pattern_ops);
