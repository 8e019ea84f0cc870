-- Facts behind GET /v1/flywheel, each projected from the event that states it.

CREATE TABLE IF NOT EXISTS flywheel_acquisitions (
    member_id          text PRIMARY KEY,            -- joined through a referral
    referrer_member_id text NOT NULL,
    occurred_at        timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS flywheel_acquisitions_time ON flywheel_acquisitions (occurred_at);

CREATE TABLE IF NOT EXISTS flywheel_peer_help (
    event_id         text PRIMARY KEY,
    helper_member_id text NOT NULL,
    helped_member_id text NOT NULL,
    thread_id        text,
    accepted         boolean NOT NULL,
    occurred_at      timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS flywheel_peer_help_thread ON flywheel_peer_help (thread_id);
CREATE INDEX IF NOT EXISTS flywheel_peer_help_time ON flywheel_peer_help (occurred_at);

CREATE TABLE IF NOT EXISTS flywheel_questions (
    activity_id text PRIMARY KEY,                   -- source:activity_id
    member_id   text NOT NULL,
    thread_id   text,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS flywheel_questions_time ON flywheel_questions (occurred_at);

CREATE TABLE IF NOT EXISTS flywheel_churn_risk (
    event_id    text PRIMARY KEY,
    member_id   text NOT NULL,
    occurred_at timestamptz NOT NULL
);
