-- Outbound webhooks: who subscribes to which event types, one delivery row per (subscription,
-- event) written in the fan-out batch's transaction, and every attempt of every delivery.

-- The fan-out consumer (group gateway-webhooks) needs an inbox of its own: the read model's
-- consumer (gateway-journey) reads some of the same events and claims their ids in `inbox`.
-- The fan-out's connections put this schema first on their search_path, so the shared
-- plumbing's `INSERT INTO inbox` lands here; every other table resolves to the usual schema.
CREATE SCHEMA IF NOT EXISTS outbound_fanout;

CREATE TABLE IF NOT EXISTS outbound_fanout.inbox (
    event_id   text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS outbound_subscriptions (
    id          text PRIMARY KEY,
    url         text NOT NULL,
    event_types text[] NOT NULL,
    secret      text NOT NULL,                  -- whsec_<base64>: needed in clear to sign
    description text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS outbound_deliveries (
    id              bigserial PRIMARY KEY,      -- also the order of a member's deliveries
    subscription_id text NOT NULL REFERENCES outbound_subscriptions (id) ON DELETE CASCADE,
    event_id        text NOT NULL,              -- the CloudEvent id, sent as webhook-id
    event_type      text NOT NULL,
    member_key      text NOT NULL,              -- the record key: one queue per member
    event_time      timestamptz NOT NULL,
    body            text NOT NULL,              -- the structured-mode CloudEvent, as signed
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    pending_since   timestamptz NOT NULL DEFAULT now(),  -- the give-up clock (reset by replay)
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    leased_until    timestamptz,                -- an attempt is in flight until then
    lease_token     uuid,
    last_status_code integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (subscription_id, event_id)
);

-- The sender's head-of-line scan: pending deliveries per (subscription, member), oldest first.
CREATE INDEX IF NOT EXISTS outbound_deliveries_pending_queue
    ON outbound_deliveries (subscription_id, member_key, id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS outbound_deliveries_log
    ON outbound_deliveries (subscription_id, status, id);
CREATE INDEX IF NOT EXISTS outbound_deliveries_created
    ON outbound_deliveries (subscription_id, created_at);

CREATE TABLE IF NOT EXISTS outbound_delivery_attempts (
    id           bigserial PRIMARY KEY,
    delivery_id  bigint NOT NULL REFERENCES outbound_deliveries (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    attempted_at timestamptz NOT NULL,
    status_code  integer,                       -- null: no answer (timeout, refused, ...)
    latency_ms   double precision NOT NULL,
    error        text,
    outcome      text NOT NULL CHECK (outcome IN ('delivered', 'failed', 'dead'))
);

CREATE INDEX IF NOT EXISTS outbound_delivery_attempts_delivery
    ON outbound_delivery_attempts (delivery_id, attempt);
