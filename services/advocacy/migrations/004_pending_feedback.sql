-- Product feedback waiting for the service clock (engagement's signal.product_feedback.v1):
-- once every input has passed its time, every champion review up to then has run, and a
-- champion's feedback is flagged with signal.champion_feedback.v1, the same at any pace
-- (docs/JOURNEY-MODEL.md, Feedback loops).
CREATE TABLE IF NOT EXISTS pending_feedback (
    event_id      text PRIMARY KEY,
    member_id     text NOT NULL,
    occurred_at   timestamptz NOT NULL,
    feedback_kind text NOT NULL,
    source        text NOT NULL,
    activity_id   text NOT NULL,
    title         text,
    url           text
);
CREATE INDEX IF NOT EXISTS pending_feedback_time ON pending_feedback (occurred_at);
CREATE INDEX IF NOT EXISTS pending_feedback_member ON pending_feedback (member_id);
