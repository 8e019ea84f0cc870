-- Issue 15: per-question state (unanswered and answered signals) and per-member honeymoons
-- (the newcomer drop-off). Like participants, every column is a function of the log, and each
-- table keeps its next deadline (domain.question_deadline, domain.newcomer_deadline), indexed,
-- so a sweep finds what its watermark has passed in one query.
CREATE TABLE IF NOT EXISTS questions (
    thread_key           text PRIMARY KEY,      -- source:thread_id
    thread_id            text NOT NULL,
    asker_member_id      text,                  -- null until the question itself is seen
    question_activity_id text,
    url                  text,
    title                text,
    asked_at             timestamptz,
    answered_at          timestamptz,           -- the first answer by event time, so far
    answer_activity_id   text,
    answered_by          text,
    answer_url           text,
    unanswered_signalled boolean NOT NULL DEFAULT false,
    answered_signalled   boolean NOT NULL DEFAULT false,
    next_deadline        timestamptz
);
CREATE INDEX IF NOT EXISTS questions_next_deadline
    ON questions (next_deadline) WHERE next_deadline IS NOT NULL;
CREATE INDEX IF NOT EXISTS questions_asker ON questions (asker_member_id);
CREATE INDEX IF NOT EXISTS questions_answered_by ON questions (answered_by);

CREATE TABLE IF NOT EXISTS newcomers (
    member_id      text PRIMARY KEY,
    newcomer_as    text NOT NULL CHECK (newcomer_as IN ('member', 'customer')),
    started_at     timestamptz NOT NULL,
    last_active_at timestamptz NOT NULL,
    did            jsonb NOT NULL DEFAULT '{}',   -- counted activities per kind
    signalled      boolean NOT NULL DEFAULT false,
    next_deadline  timestamptz
);
CREATE INDEX IF NOT EXISTS newcomers_next_deadline
    ON newcomers (next_deadline) WHERE next_deadline IS NOT NULL;
