-- Engagement state: one row per member with at least one counted activity. Every column is a
-- function of the log (event time only), so a replay rebuilds identical rows.
CREATE TABLE IF NOT EXISTS participants (
    member_id      text PRIMARY KEY,
    stage          text CHECK (stage IN ('engaged', 'at_risk', 'dormant', 'reactivated')),
    score          double precision NOT NULL CHECK (score >= 0),
    score_at       timestamptz NOT NULL,   -- the score is as of this time; it decays from here
    first_seen_at  timestamptz NOT NULL,
    last_active_at timestamptz NOT NULL,   -- the inactivity clock starts here
    stage_since    timestamptz,
    activities     integer NOT NULL,
    next_deadline  timestamptz             -- next demotion if nothing happens (domain.next_deadline)
);

-- Each batch sweeps the members whose deadline its watermark has passed.
CREATE INDEX IF NOT EXISTS participants_next_deadline
    ON participants (next_deadline) WHERE next_deadline IS NOT NULL;

-- Cohorts: the stage pools and the newcomers.
CREATE INDEX IF NOT EXISTS participants_stage ON participants (stage) WHERE stage IS NOT NULL;
CREATE INDEX IF NOT EXISTS participants_first_seen ON participants (first_seen_at);
