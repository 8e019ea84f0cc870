-- Advocacy state. The contribution log is the evidence: scores and every review window are
-- recomputable from it, and signals cite it.

-- One row per member ever credited: the lifetime score and the current stage.
CREATE TABLE IF NOT EXISTS advocacy_members (
    member_id text PRIMARY KEY,
    stage     text CHECK (stage IN ('advocate', 'champion')),
    score     double precision NOT NULL,
    -- {"counts": {"<kind>": n, ...}, "links": ["newest first", ...]}
    evidence  jsonb NOT NULL
);
-- a review loads the champions and the advocates
CREATE INDEX IF NOT EXISTS advocacy_members_stage ON advocacy_members (stage)
    WHERE stage IS NOT NULL;

-- Every credited contribution, once: `key` names the act (see domain.Contribution.key).
CREATE TABLE IF NOT EXISTS contributions (
    key         text PRIMARY KEY,
    member_id   text NOT NULL,
    kind        text NOT NULL,
    weight      double precision NOT NULL,
    occurred_at timestamptz NOT NULL,
    link        text,
    content_id  text,  -- content_engaged only: the piece engaged with, for the cap
    cause_id    text NOT NULL  -- the id of the event it came from
);
CREATE INDEX IF NOT EXISTS contributions_member_time ON contributions (member_id, occurred_at);
CREATE INDEX IF NOT EXISTS contributions_content ON contributions (content_id)
    WHERE content_id IS NOT NULL;

-- The last champion review boundary passed (event time).
CREATE TABLE IF NOT EXISTS review_clock (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_boundary timestamptz NOT NULL
);
