-- Tables every service database has: the inbox (which events were applied) and the outbox
-- (what the service emits, written in the same transaction as its state, published later).

CREATE TABLE IF NOT EXISTS inbox (
    event_id   text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS outbox (
    seq           bigserial PRIMARY KEY,
    event_id      text NOT NULL,
    topic         text NOT NULL,
    key           bytea,
    value         bytea,
    header_names  text[] NOT NULL,
    header_values bytea[] NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- The service's event-time watermark: the newest event time seen. Inactivity and windows are
-- judged against it (minus the allowed lateness), never against the wall clock, so a replay
-- of the same log gives the same transitions.
CREATE TABLE IF NOT EXISTS watermark (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    event_time timestamptz NOT NULL
);
