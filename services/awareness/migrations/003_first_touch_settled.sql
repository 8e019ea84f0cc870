-- member.first_touch.v1 is stated once per member, when the service clock has passed their
-- joining: `attributed` says it was. People already here when this ran are not stated again
-- (their transitions' details carried their first touch); a replay states everyone's.
ALTER TABLE people ADD COLUMN IF NOT EXISTS attributed boolean NOT NULL DEFAULT false;
UPDATE people SET attributed = true WHERE joined_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS people_to_attribute ON people (joined_at) WHERE NOT attributed;
