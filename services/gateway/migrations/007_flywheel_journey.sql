-- Issue 15: the facts behind consideration, first touch, retention, questions, the honeymoon
-- drop-off, product feedback and the health ratios of GET /v1/flywheel, each projected from
-- the event that states it.

-- The latest first touch awareness stated for a person (transition details).
CREATE TABLE IF NOT EXISTS flywheel_first_touch (
    member_id   text PRIMARY KEY,
    channel     text NOT NULL,
    detail      text,
    stated_at   timestamptz NOT NULL             -- the transition that stated it
);

-- Every conversion to customer, with its community influence.
CREATE TABLE IF NOT EXISTS flywheel_conversions (
    event_id              text PRIMARY KEY,
    member_id             text NOT NULL,
    from_stage            text,
    considered            boolean NOT NULL,
    community_influenced  boolean NOT NULL,
    community_touchpoints integer NOT NULL,
    channel               text,
    occurred_at           timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS flywheel_conversions_time ON flywheel_conversions (occurred_at);

-- Members who took part: one row per member and day with a counted community activity.
CREATE TABLE IF NOT EXISTS flywheel_active_days (
    member_id text NOT NULL,
    day       date NOT NULL,                       -- UTC
    at        timestamptz NOT NULL,                -- the day's first such activity
    PRIMARY KEY (member_id, day)
);
CREATE INDEX IF NOT EXISTS flywheel_active_days_at ON flywheel_active_days (at);

CREATE TABLE IF NOT EXISTS flywheel_question_signals (
    event_id          text PRIMARY KEY,
    kind              text NOT NULL CHECK (kind IN ('unanswered', 'answered')),
    member_id         text NOT NULL,                 -- the asker
    thread_id         text NOT NULL,
    answered_by       text,
    first_response_s  double precision,
    occurred_at       timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS flywheel_question_signals_time ON flywheel_question_signals (occurred_at);

CREATE TABLE IF NOT EXISTS flywheel_drop_offs (
    event_id     text PRIMARY KEY,
    member_id    text NOT NULL,
    newcomer_as  text NOT NULL,
    occurred_at  timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS flywheel_feedback (
    event_id      text PRIMARY KEY,
    member_id     text NOT NULL,
    feedback_kind text NOT NULL,
    from_champion boolean NOT NULL,
    occurred_at   timestamptz NOT NULL
);
