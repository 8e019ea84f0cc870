-- Awareness state: one row per person (visitor or member).
CREATE TABLE IF NOT EXISTS people (
    member_id     text PRIMARY KEY,
    stage         text NOT NULL,
    first_seen_at timestamptz NOT NULL,
    joined_at     timestamptz
);
