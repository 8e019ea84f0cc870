-- Issue 15: consideration (the first evaluation of the product) and retention (renewals and
-- repeat purchases counted; the stage column holds considering, retained, lapsed, churned).
ALTER TABLE people ADD COLUMN IF NOT EXISTS considered_at timestamptz;
ALTER TABLE people ADD COLUMN IF NOT EXISTS considered_by text;
ALTER TABLE people ADD COLUMN IF NOT EXISTS renewals integer NOT NULL DEFAULT 0;
