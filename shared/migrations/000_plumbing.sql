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
