-- Engagement state: one row per member who did anything.
CREATE TABLE IF NOT EXISTS participants (
    member_id      text PRIMARY KEY,
    stage          text,
    contributions  integer NOT NULL,
    last_active_at timestamptz NOT NULL
);
