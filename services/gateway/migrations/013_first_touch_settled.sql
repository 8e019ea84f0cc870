-- member.first_touch.v1 (awareness, once its clock passed the member's joining) settles a
-- member's first touch: it wins over what transitions' details said, and nothing later
-- overrides it. Its channel may be unknown (no activity told how they came).
ALTER TABLE flywheel_first_touch ADD COLUMN IF NOT EXISTS settled boolean NOT NULL DEFAULT false;
ALTER TABLE flywheel_first_touch ALTER COLUMN channel DROP NOT NULL;
