-- Issue 14 item 6: cohort retention (services/gateway/directory/store.py: cohort_retention)
-- from counters instead of a pass over every member (bench/dashboard.py: 0.2-0.3 s at 100k
-- members, 1.7-2.4 s at 1M).
--
-- Members (not visitors) counted per UTC day they joined and per retention level: the largest
-- of 1, 2, 4, 8, 12 weeks with last_active_at - first_seen_at >= that many weeks (0: none).
-- The level is the member's own; only "old enough" depends on the read model's now, and it is
-- decided per day: every member who joined before the day of now - N weeks is old enough,
-- none after it, and that one day's members are read from directory_members (an index range
-- of the retention index) and compared exactly.
--
-- Kept by a statement trigger on directory_members, so every writer (the projection's upserts,
-- a visitor folded into its member, merges, erasures) moves it in its own transaction, once
-- per statement: a row only moves a counter when its day, level or visitor flag changes.

CREATE TABLE IF NOT EXISTS directory_cohort_days (
    day   date NOT NULL,                       -- first_seen_at's UTC day
    level smallint NOT NULL,                   -- 0, 1, 2, 4, 8 or 12 weeks
    n     bigint NOT NULL,
    PRIMARY KEY (day, level)
);

-- weeks as epoch arithmetic (7 x 86,400 s), as cohort_retention has always compared them
CREATE OR REPLACE FUNCTION directory_retention_level(joined timestamptz, last timestamptz)
RETURNS smallint LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN extract(epoch FROM last - joined) / 604800 >= 12 THEN 12
        WHEN extract(epoch FROM last - joined) / 604800 >= 8 THEN 8
        WHEN extract(epoch FROM last - joined) / 604800 >= 4 THEN 4
        WHEN extract(epoch FROM last - joined) / 604800 >= 2 THEN 2
        WHEN extract(epoch FROM last - joined) / 604800 >= 1 THEN 1
        ELSE 0 END::smallint
$$;

CREATE OR REPLACE FUNCTION directory_cohort_count() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO directory_cohort_days AS c (day, level, n)
        SELECT (first_seen_at AT TIME ZONE 'UTC')::date,
               directory_retention_level(first_seen_at, last_active_at), count(*)
        FROM new_rows WHERE NOT anonymous GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (day, level) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO directory_cohort_days AS c (day, level, n)
        SELECT (first_seen_at AT TIME ZONE 'UTC')::date,
               directory_retention_level(first_seen_at, last_active_at), -count(*)
        FROM old_rows WHERE NOT anonymous GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (day, level) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSE
        INSERT INTO directory_cohort_days AS c (day, level, n)
        SELECT day, level, sum(n) FROM (
            SELECT (first_seen_at AT TIME ZONE 'UTC')::date AS day,
                   directory_retention_level(first_seen_at, last_active_at) AS level, -1 AS n
            FROM old_rows WHERE NOT anonymous
            UNION ALL
            SELECT (first_seen_at AT TIME ZONE 'UTC')::date,
                   directory_retention_level(first_seen_at, last_active_at), 1
            FROM new_rows WHERE NOT anonymous) moved
        GROUP BY 1, 2 HAVING sum(n) <> 0 ORDER BY 1, 2
        ON CONFLICT (day, level) DO UPDATE SET n = c.n + EXCLUDED.n;
    END IF;
    RETURN NULL;
END
$fn$;

DROP TRIGGER IF EXISTS directory_cohort_insert ON directory_members;
CREATE TRIGGER directory_cohort_insert AFTER INSERT ON directory_members
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION directory_cohort_count();
DROP TRIGGER IF EXISTS directory_cohort_update ON directory_members;
CREATE TRIGGER directory_cohort_update AFTER UPDATE ON directory_members
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION directory_cohort_count();
DROP TRIGGER IF EXISTS directory_cohort_delete ON directory_members;
CREATE TRIGGER directory_cohort_delete AFTER DELETE ON directory_members
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION directory_cohort_count();

-- the members already there
INSERT INTO directory_cohort_days (day, level, n)
SELECT (first_seen_at AT TIME ZONE 'UTC')::date,
       directory_retention_level(first_seen_at, last_active_at), count(*)
FROM directory_members WHERE NOT anonymous GROUP BY 1, 2
ON CONFLICT (day, level) DO UPDATE SET n = EXCLUDED.n;
