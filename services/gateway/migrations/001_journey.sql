-- The gateway's read model of journey-transitions: every transition, and the current stage
-- of each member per dimension. Rebuilt from the topic by resetting the consumer group.

CREATE TABLE IF NOT EXISTS journey_transitions (
    seq         bigserial PRIMARY KEY,          -- arrival order (breaks event-time ties)
    event_id    text NOT NULL UNIQUE,
    member_id   text NOT NULL,
    dimension   text NOT NULL,
    from_stage  text,
    to_stage    text NOT NULL,
    reason      text NOT NULL,
    score       double precision,
    occurred_at timestamptz NOT NULL,
    caused_by   text[] NOT NULL DEFAULT '{}',
    received_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS journey_transitions_member_time
    ON journey_transitions (member_id, occurred_at, seq);

CREATE TABLE IF NOT EXISTS member_stages (
    member_id  text NOT NULL,
    dimension  text NOT NULL,
    stage      text NOT NULL,
    since      timestamptz NOT NULL,            -- event time of the transition into it
    score      double precision,
    event_id   text NOT NULL,                   -- the transition that set it
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (member_id, dimension)
);

CREATE INDEX IF NOT EXISTS member_stages_dimension_stage ON member_stages (dimension, stage);
