-- Inbound platform webhooks (services/gateway/webhooks/): the deliveries already published,
-- so a redelivery is recognised and published once, and who started each thread, because
-- some platforms (Discourse) do not say so in a reply's payload.

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    source       text NOT NULL,                 -- github, discourse, slack
    delivery_id  text NOT NULL,                 -- X-GitHub-Delivery, X-Discourse-Event-Id, event_id
    event        text NOT NULL,                 -- e.g. issues.opened
    activity_ids text[] NOT NULL DEFAULT '{}',
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, delivery_id)
);

-- pruning after FLYWHEEL_INBOUND_WEBHOOK_DEDUPE_DAYS
CREATE INDEX IF NOT EXISTS webhook_deliveries_received_at ON webhook_deliveries (received_at);

CREATE TABLE IF NOT EXISTS webhook_thread_authors (
    source           text NOT NULL,
    thread_id        text NOT NULL,
    author_member_id text NOT NULL,
    first_seen_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, thread_id)
);
