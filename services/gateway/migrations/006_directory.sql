-- The member directory, the profile, the leaderboards and the dashboard's series
-- (services/gateway/directory/): projected from member-activity, journey-transitions and
-- signals.advocacy by the read model's consumer, like every other table here.

-- One row per member (and per visitor, by anonymous id): what the directory filters, sorts
-- and exports. The stages are copied from member_stages when a transition moves them, so a
-- filter on a stage and a sort are one index scan of one table.
CREATE TABLE IF NOT EXISTS directory_members (
    member_id        text PRIMARY KEY,
    handle           text,                       -- the latest actor.handle seen
    anonymous        boolean NOT NULL DEFAULT false,  -- only ever seen as a visitor
    first_seen_at    timestamptz NOT NULL,       -- "joined": the oldest activity's event time
    last_active_at   timestamptz NOT NULL,       -- the newest activity's event time
    activities       bigint NOT NULL DEFAULT 0,
    sources          text[] NOT NULL DEFAULT '{}',  -- platforms seen, sorted
    awareness_stage  text,
    engagement_stage text,
    advocacy_stage   text,
    score            double precision NOT NULL DEFAULT 0  -- the latest engagement score
);

-- keyset pagination: (sort key, member_id) in either direction
CREATE INDEX IF NOT EXISTS directory_members_last_active
    ON directory_members (last_active_at, member_id);
CREATE INDEX IF NOT EXISTS directory_members_joined ON directory_members (first_seen_at, member_id);
CREATE INDEX IF NOT EXISTS directory_members_score ON directory_members (score, member_id);
-- filters that are selective on their own
CREATE INDEX IF NOT EXISTS directory_members_engagement
    ON directory_members (engagement_stage, last_active_at, member_id);
CREATE INDEX IF NOT EXISTS directory_members_advocacy
    ON directory_members (advocacy_stage, score, member_id) WHERE advocacy_stage IS NOT NULL;
CREATE INDEX IF NOT EXISTS directory_members_awareness ON directory_members (awareness_stage);
CREATE INDEX IF NOT EXISTS directory_members_sources ON directory_members USING gin (sources);
-- search: prefixes of the handle or the member id, case-insensitive
CREATE INDEX IF NOT EXISTS directory_members_handle_prefix
    ON directory_members (lower(handle) text_pattern_ops);
CREATE INDEX IF NOT EXISTS directory_members_id_prefix
    ON directory_members (lower(member_id) text_pattern_ops);

-- The last FLYWHEEL_DIRECTORY_RECENT_ACTIVITIES activities of each member (bounded).
CREATE TABLE IF NOT EXISTS directory_activities (
    member_id   text NOT NULL,
    activity_id text NOT NULL,                   -- source:activity_id
    occurred_at timestamptz NOT NULL,
    source      text NOT NULL,
    kind        text NOT NULL,
    title       text,
    url         text,
    PRIMARY KEY (member_id, activity_id)
);
CREATE INDEX IF NOT EXISTS directory_activities_member_time
    ON directory_activities (member_id, occurred_at DESC);

-- Every activity counted per member and kind: the profile's contributions.
CREATE TABLE IF NOT EXISTS directory_kind_counts (
    member_id text NOT NULL,
    kind      text NOT NULL,
    n         bigint NOT NULL,
    PRIMARY KEY (member_id, kind)
);

-- signal.advocate.v1 and signal.champion_nominated.v1: the leaderboards' evidence.
CREATE TABLE IF NOT EXISTS directory_advocacy_signals (
    event_id    text PRIMARY KEY,
    member_id   text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('advocate', 'champion')),
    score       double precision NOT NULL,
    rank        integer,                         -- champions only
    evidence    jsonb NOT NULL,                  -- counts per kind of contribution
    links       text[] NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS directory_advocacy_signals_time
    ON directory_advocacy_signals (occurred_at, kind);
CREATE INDEX IF NOT EXISTS directory_advocacy_signals_member
    ON directory_advocacy_signals (member_id, occurred_at);

-- Transitions per week, dimension and stage entered: the stage-flow chart without scanning
-- journey_transitions (counted as they are projected; an erasure takes its own back out).
CREATE TABLE IF NOT EXISTS directory_stage_weeks (
    week      date NOT NULL,                     -- Monday of the ISO week (UTC)
    dimension text NOT NULL,
    stage     text NOT NULL,
    n         bigint NOT NULL,
    PRIMARY KEY (week, dimension, stage)
);

-- Cohort retention reads (joined, last active) of every member: an index-only scan.
CREATE INDEX IF NOT EXISTS directory_members_retention
    ON directory_members (first_seen_at, last_active_at) WHERE NOT anonymous;

-- The funnel's "who entered this stage in the window" and the time-in-stage spans, measured
-- at 100k members (bench/dashboard.py): without these both scan every transition.
CREATE INDEX IF NOT EXISTS journey_transitions_stage_time
    ON journey_transitions (dimension, to_stage, occurred_at, member_id);
CREATE INDEX IF NOT EXISTS journey_transitions_member_dimension
    ON journey_transitions (member_id, dimension, occurred_at, seq);

-- Questions per week and how many of them a peer answered: the peer-answer share over time.
CREATE INDEX IF NOT EXISTS flywheel_peer_help_thread_helped
    ON flywheel_peer_help (thread_id, helped_member_id, occurred_at);
