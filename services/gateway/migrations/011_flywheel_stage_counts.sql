-- Issue 14 item 6: members per current stage (GET /v1/flywheel's members_per_stage, at_risk_now,
-- the health ratios' advocates) counted as member_stages moves, instead of a pass over every
-- member's stages (bench/dashboard.py: 0.34 s of the report at 1M members).
--
-- A statement trigger on member_stages moves the counters by what each statement changed
-- (the journey's upserts, a merge, an erasure), in its transaction; a statement that changes
-- no member's stage (a later transition into the same stage) writes no counter.

CREATE TABLE IF NOT EXISTS flywheel_stage_counts (
    dimension text NOT NULL,
    stage     text NOT NULL,
    n         bigint NOT NULL,
    PRIMARY KEY (dimension, stage)
);

CREATE OR REPLACE FUNCTION flywheel_stage_count() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO flywheel_stage_counts AS c (dimension, stage, n)
        SELECT dimension, stage, count(*) FROM new_rows GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (dimension, stage) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO flywheel_stage_counts AS c (dimension, stage, n)
        SELECT dimension, stage, -count(*) FROM old_rows GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (dimension, stage) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSE
        INSERT INTO flywheel_stage_counts AS c (dimension, stage, n)
        SELECT dimension, stage, sum(n) FROM (
            SELECT dimension, stage, -1 AS n FROM old_rows
            UNION ALL
            SELECT dimension, stage, 1 FROM new_rows) moved
        GROUP BY 1, 2 HAVING sum(n) <> 0 ORDER BY 1, 2
        ON CONFLICT (dimension, stage) DO UPDATE SET n = c.n + EXCLUDED.n;
    END IF;
    RETURN NULL;
END
$fn$;

DROP TRIGGER IF EXISTS flywheel_stage_count_insert ON member_stages;
CREATE TRIGGER flywheel_stage_count_insert AFTER INSERT ON member_stages
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION flywheel_stage_count();
DROP TRIGGER IF EXISTS flywheel_stage_count_update ON member_stages;
CREATE TRIGGER flywheel_stage_count_update AFTER UPDATE ON member_stages
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION flywheel_stage_count();
DROP TRIGGER IF EXISTS flywheel_stage_count_delete ON member_stages;
CREATE TRIGGER flywheel_stage_count_delete AFTER DELETE ON member_stages
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION flywheel_stage_count();

-- the stages already there
INSERT INTO flywheel_stage_counts (dimension, stage, n)
SELECT dimension, stage, count(*) FROM member_stages GROUP BY 1, 2
ON CONFLICT (dimension, stage) DO UPDATE SET n = EXCLUDED.n;
