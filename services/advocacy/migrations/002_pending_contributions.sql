-- Contributions waiting for the service clock: credited in event-time order once every input
-- partition has passed their time, so which one crosses the advocate threshold, which
-- engagements a capped piece counts, and what a review sees do not depend on how partitions
-- and topics happened to interleave (docs/GUARANTEES.md, Event time).
CREATE TABLE IF NOT EXISTS pending_contributions (
    key         text PRIMARY KEY,
    member_id   text NOT NULL,
    kind        text NOT NULL,
    weight      double precision NOT NULL,
    occurred_at timestamptz NOT NULL,
    link        text,
    content_id  text,
    cause_id    text NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_contributions_time ON pending_contributions (occurred_at);
CREATE INDEX IF NOT EXISTS pending_contributions_member ON pending_contributions (member_id);
