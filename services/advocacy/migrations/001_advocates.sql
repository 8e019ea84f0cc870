-- Advocacy state: one row per member who helped someone.
CREATE TABLE IF NOT EXISTS advocates (
    member_id        text PRIMARY KEY,
    stage            text,
    accepted_answers integer NOT NULL
);
