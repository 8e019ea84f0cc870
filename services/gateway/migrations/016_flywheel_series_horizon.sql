-- Issue 16: after a batch, flywheel_series_refresh recomputes a member's rows from a horizon
-- on, not from the member's first transition.
--
-- 015 recomputed every row of a batch's members from all their transitions and compared them
-- with all their stored rows. In a backfill the batches hold a community's most active
-- people, so late in a million-activity import one call read 22,000-43,000 transitions and
-- 34,000-60,000 stored rows to write ~1,700 changed ones (docs/PERFORMANCE.md). A new
-- transition moves only rows at or after a time that can be worked out before reading them:
-- the member's horizon. Every stored row of the member that lies before it is already what a
-- rebuild gives; the rows at or after it are recomputed from the transitions at or after it
-- and compared as 015 did.
--
-- A row lies at its transition's time (an entry's `at`, a span's `entered_at`), and a
-- transition's time never moves. For a batch's new transitions of a member, the earliest
-- time whose rows can change (flywheel_series_horizons) is the least of:
--   * the earliest new transition: its own rows, and the entries whose previous entry of the
--     same kind (prev_at) it becomes, all lie at or after it;
--   * per dimension with a new transition, the latest earlier transition in that dimension:
--     the stage it entered is now left at the new one (its span);
--   * per funnel pair whose target stage the batch enters, the latest earlier arrival in the
--     target: an entry before that arrival reached the target there already, an entry after
--     it may now reach it at the new one (none: every entry of the pair may);
--   * a new entry into engagement's `engaged`, less `engaged_within`: a joining up to that
--     long before it may now count as engaged within it (FUNNEL's member -> engaged pair
--     covers this today; kept so the horizon does not depend on the funnel);
--   * a member whose first-touch channel changed: every row (its joinings' touch rows).
-- The window's first entry of a kind takes its previous entry (and the member's earliest
-- engaged entry) from before the horizon by an index probe, not by reading the history.
--
-- A merge, an erasure and a rebuild keep flywheel_series_refresh(members, ...): every row of
-- those members (their horizon is -infinity). tests/test_flywheel_series.py holds the tables
-- kept batch by batch equal to a rebuild after every batch, arrivals shuffled.

-- A member's stored rows from its horizon on, read by a range of an index; and its latest
-- entry into a stage before the horizon, read by one descent of an index
CREATE INDEX IF NOT EXISTS flywheel_entries_member_at ON flywheel_entries (member_id, at);
CREATE INDEX IF NOT EXISTS flywheel_spans_member_entered ON flywheel_spans (member_id, entered_at);
CREATE INDEX IF NOT EXISTS journey_transitions_member_stage
    ON journey_transitions (member_id, dimension, to_stage, occurred_at);

-- The rows of each member at or after its horizon, recomputed and compared with the stored
-- ones; only rows that differ are written, and the day counters move by them (as in 015).
CREATE OR REPLACE FUNCTION flywheel_series_refresh_from(
    members text[], horizons timestamptz[], funnel jsonb, engaged_within interval
) RETURNS void LANGUAGE plpgsql
-- planned for the members at hand: a generic plan of these statements scans every member
SET plan_cache_mode = force_custom_plan
AS $fn$
BEGIN
    WITH m AS (SELECT * FROM unnest(members, horizons) AS u(member_id, h)),
        -- each member's transitions from its horizon on: an index range scan per member
        -- (OFFSET 0 keeps it one; joined as a whole, the batch's members looked like a large
        -- share of the table and were read by a scan of all of it)
        t AS (
            SELECT x.*, m.h
            FROM m CROSS JOIN LATERAL (
                SELECT member_id, dimension, to_stage, occurred_at, seq, event_id
                FROM journey_transitions
                WHERE member_id = m.member_id AND occurred_at >= m.h OFFSET 0) x),
        e AS (
            SELECT t.*,
                   -- the previous entry of the kind: in the window, else before the horizon
                   coalesce(
                       lag(occurred_at) OVER (PARTITION BY member_id, dimension, to_stage
                                              ORDER BY occurred_at, seq),
                       CASE WHEN h > '-infinity' THEN
                           (SELECT max(p.occurred_at) FROM journey_transitions p
                            WHERE p.member_id = t.member_id AND p.dimension = t.dimension
                              AND p.to_stage = t.to_stage AND p.occurred_at < t.h) END)
                       AS prev_at,
                   -- the earliest engaged entry in the window (and before it: `engaged30`)
                   min(occurred_at) FILTER (
                       WHERE dimension = 'engagement' AND to_stage = 'engaged')
                       OVER (PARTITION BY member_id) AS engaged_at
            FROM t),
        f AS (
            SELECT i - 1 AS i, p -> 0 ->> 0 AS from_dim, p -> 0 ->> 1 AS from_stage,
                   p -> 1 ->> 0 AS to_dim,
                   ARRAY(SELECT jsonb_array_elements_text(p -> 1 -> 1)) AS to_stages
            FROM jsonb_array_elements(funnel) WITH ORDINALITY AS x(p, i)),
        -- per funnel pair and member, its entries and its arrivals in the target, newest
        -- first (an arrival before an entry at the same instant): the running minimum of the
        -- arrivals is each entry's first arrival at or after it
        pair AS (
            SELECT f.i, e.member_id, e.event_id, e.occurred_at, e.prev_at, false AS target
            FROM e JOIN f ON e.dimension = f.from_dim AND e.to_stage = f.from_stage
            UNION ALL
            SELECT f.i, t.member_id, NULL, t.occurred_at, NULL, true
            FROM t JOIN f ON t.dimension = f.to_dim AND t.to_stage = ANY(f.to_stages)),
        reach AS (
            SELECT pair.*, min(occurred_at) FILTER (WHERE target) OVER (
                       PARTITION BY i, member_id ORDER BY occurred_at DESC, target DESC
                       ROWS UNBOUNDED PRECEDING) AS next_at
            FROM pair),
        computed AS (
            SELECT 'enter:' || dimension || ':' || to_stage AS kind, event_id, member_id,
                   occurred_at AS at, prev_at, '-infinity'::timestamptz AS next_at
            FROM e
            UNION ALL
            -- a conversion: the first arrival in the target at or after the entry
            SELECT 'convert:' || i, event_id, member_id, occurred_at, prev_at, next_at
            FROM reach WHERE NOT target
            UNION ALL
            -- joined or bought (the health ratios' members): one kind across both stages
            SELECT 'joined', event_id, member_id, occurred_at,
                   coalesce(
                       lag(occurred_at) OVER (PARTITION BY member_id ORDER BY occurred_at, seq),
                       CASE WHEN h > '-infinity' THEN
                           (SELECT max(p.occurred_at) FROM journey_transitions p
                            WHERE p.member_id = t.member_id AND p.dimension = 'awareness'
                              AND p.to_stage IN ('member', 'customer')
                              AND p.occurred_at < t.h) END),
                   '-infinity'
            FROM t WHERE dimension = 'awareness' AND to_stage IN ('member', 'customer')
            UNION ALL
            -- joined, and engaged within `engaged_within` of joining
            SELECT 'engaged30', e.event_id, e.member_id, e.occurred_at, e.prev_at, '-infinity'
            FROM e WHERE e.dimension = 'awareness' AND e.to_stage = 'member'
              AND least(e.engaged_at,
                        CASE WHEN e.h > '-infinity' THEN
                            (SELECT min(p.occurred_at) FROM journey_transitions p
                             WHERE p.member_id = e.member_id AND p.dimension = 'engagement'
                               AND p.to_stage = 'engaged' AND p.occurred_at < e.h) END)
                  <= e.occurred_at + engaged_within
            UNION ALL
            -- joined, by the first touch awareness stated for the member
            SELECT 'touch:' || coalesce(ft.channel, 'unknown'), e.event_id, e.member_id,
                   e.occurred_at, e.prev_at, '-infinity'
            FROM e LEFT JOIN flywheel_first_touch ft ON ft.member_id = e.member_id
            WHERE e.dimension = 'awareness' AND e.to_stage = 'member'),
        -- the days as flywheel_entries' generated columns compute them
        fresh AS (
            SELECT kind, event_id, member_id, at, prev_at, next_at,
                   (at AT TIME ZONE 'UTC')::date AS day,
                   coalesce((prev_at AT TIME ZONE 'UTC')::date, '-infinity') AS prev_day,
                   (next_at AT TIME ZONE 'UTC')::date AS next_day
            FROM computed
            WHERE next_at IS NOT NULL),  -- a conversion never reached: never counted
        stored AS (
            SELECT o.kind, o.event_id, o.member_id, o.at, o.prev_at, o.next_at, o.day,
                   o.prev_day, o.next_day
            FROM m CROSS JOIN LATERAL (
                SELECT * FROM flywheel_entries
                WHERE member_id = m.member_id AND at >= m.h OFFSET 0) o),
        -- the rows that differ: o.* the stored version (NULL: new), n.* the computed one
        -- (NULL: gone)
        moved AS (
            SELECT o.kind AS o_kind, o.event_id AS o_event_id, o.member_id AS o_member_id,
                   o.day AS o_day, o.prev_day AS o_prev_day, o.next_day AS o_next_day,
                   n.kind, n.event_id, n.member_id, n.at, n.prev_at, n.next_at,
                   n.day, n.prev_day, n.next_day
            FROM stored o FULL JOIN fresh n
              ON n.member_id = o.member_id AND n.kind = o.kind AND n.event_id = o.event_id
            WHERE o.member_id IS NULL OR n.member_id IS NULL
               OR n.at <> o.at OR n.prev_at IS DISTINCT FROM o.prev_at
               OR n.next_at <> o.next_at),
        gone AS (
            DELETE FROM flywheel_entries x USING moved m
            WHERE m.member_id IS NULL AND x.member_id = m.o_member_id
              AND x.kind = m.o_kind AND x.event_id = m.o_event_id),
        put AS (
            INSERT INTO flywheel_entries AS x (kind, event_id, member_id, at, prev_at, next_at)
            SELECT kind, event_id, member_id, at, prev_at, next_at FROM moved
            WHERE member_id IS NOT NULL
            ON CONFLICT (member_id, kind, event_id) DO UPDATE
                SET at = EXCLUDED.at, prev_at = EXCLUDED.prev_at, next_at = EXCLUDED.next_at)
        INSERT INTO flywheel_entry_days AS d (kind, day, prev_day, next_day, n)
        SELECT kind, day, prev_day, next_day, sum(n) FROM (
            SELECT o_kind AS kind, o_day AS day, o_prev_day AS prev_day,
                   o_next_day AS next_day, -1 AS n
            FROM moved WHERE o_member_id IS NOT NULL
            UNION ALL
            SELECT kind, day, prev_day, next_day, 1 FROM moved WHERE member_id IS NOT NULL
        ) c
        GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0 ORDER BY 1, 2, 3, 4
        ON CONFLICT (kind, day, prev_day, next_day) DO UPDATE SET n = d.n + EXCLUDED.n;

    -- the spans likewise: a stage left (the next transition in its dimension)
    WITH m AS (SELECT * FROM unnest(members, horizons) AS u(member_id, h)),
        fresh AS (
            SELECT member_id, event_id, dimension, to_stage AS stage,
                   occurred_at AS entered_at, left_at
            FROM (SELECT x.member_id, x.event_id, x.dimension, x.to_stage, x.occurred_at,
                         lead(x.occurred_at) OVER (PARTITION BY x.member_id, x.dimension
                                                   ORDER BY x.occurred_at, x.seq) AS left_at
                  FROM m CROSS JOIN LATERAL (
                      SELECT * FROM journey_transitions
                      WHERE member_id = m.member_id AND occurred_at >= m.h OFFSET 0) x) s
            WHERE left_at IS NOT NULL),
        stored AS (
            SELECT o.member_id, o.event_id, o.dimension, o.stage, o.entered_at, o.left_at
            FROM m CROSS JOIN LATERAL (
                SELECT * FROM flywheel_spans
                WHERE member_id = m.member_id AND entered_at >= m.h OFFSET 0) o),
        moved AS (
            SELECT o.member_id AS o_member_id, o.event_id AS o_event_id, n.*
            FROM stored o FULL JOIN fresh n
              ON n.member_id = o.member_id AND n.event_id = o.event_id
            WHERE o.member_id IS NULL OR n.member_id IS NULL
               OR n.dimension <> o.dimension OR n.stage <> o.stage
               OR n.entered_at <> o.entered_at OR n.left_at <> o.left_at),
        gone AS (
            DELETE FROM flywheel_spans x USING moved m
            WHERE m.member_id IS NULL AND x.member_id = m.o_member_id
              AND x.event_id = m.o_event_id)
        INSERT INTO flywheel_spans AS x (member_id, event_id, dimension, stage, entered_at,
                                         left_at)
        SELECT member_id, event_id, dimension, stage, entered_at, left_at FROM moved
        WHERE member_id IS NOT NULL
        ON CONFLICT (member_id, event_id) DO UPDATE
            SET dimension = EXCLUDED.dimension, stage = EXCLUDED.stage,
                entered_at = EXCLUDED.entered_at, left_at = EXCLUDED.left_at;
END
$fn$;

-- Per member, the earliest time whose rows a batch's new transitions (the member, dimension,
-- stage and time of each) can move; `retouched`: members whose first-touch channel changed
-- (-infinity). The reasons are in this file's head comment.
CREATE OR REPLACE FUNCTION flywheel_series_horizons(
    members text[], dimensions text[], stages text[], ats timestamptz[], retouched text[],
    funnel jsonb, engaged_within interval
) RETURNS TABLE (member_id text, horizon timestamptz) LANGUAGE sql STABLE AS $fn$
    WITH c AS (
            SELECT * FROM unnest(members, dimensions, stages, ats)
                AS c(member_id, dimension, stage, at)),
        f AS (
            SELECT i - 1 AS i, p -> 1 ->> 0 AS to_dim,
                   ARRAY(SELECT jsonb_array_elements_text(p -> 1 -> 1)) AS to_stages
            FROM jsonb_array_elements(funnel) WITH ORDINALITY AS x(p, i)),
        bound(member_id, h) AS (
            SELECT unnest(retouched), '-infinity'::timestamptz
            UNION ALL
            SELECT c.member_id, min(c.at) FROM c GROUP BY c.member_id
            UNION ALL
            SELECT g.member_id,
                   (SELECT max(p.occurred_at) FROM journey_transitions p
                    WHERE p.member_id = g.member_id AND p.dimension = g.dimension
                      AND p.occurred_at < g.at)
            FROM (SELECT c.member_id, c.dimension, min(c.at) AS at FROM c GROUP BY 1, 2) g
            UNION ALL
            SELECT g.member_id,
                   coalesce((SELECT max(p.occurred_at) FROM journey_transitions p
                             WHERE p.member_id = g.member_id AND p.dimension = g.to_dim
                               AND p.to_stage = ANY(g.to_stages) AND p.occurred_at < g.at),
                            '-infinity')
            FROM (SELECT c.member_id, f.i, f.to_dim, f.to_stages, min(c.at) AS at
                  FROM c JOIN f ON c.dimension = f.to_dim AND c.stage = ANY(f.to_stages)
                  GROUP BY 1, 2, 3, 4) g
            UNION ALL
            SELECT c.member_id, min(c.at) - engaged_within FROM c
            WHERE c.dimension = 'engagement' AND c.stage = 'engaged' GROUP BY c.member_id)
    SELECT b.member_id, min(b.h) FROM bound b GROUP BY b.member_id  -- min skips a NULL
$fn$;

-- After a batch: the members' rows from their horizons on.
CREATE OR REPLACE FUNCTION flywheel_series_refresh_after(
    members text[], dimensions text[], stages text[], ats timestamptz[], retouched text[],
    funnel jsonb, engaged_within interval
) RETURNS void LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $fn$
DECLARE
    who text[];
    since timestamptz[];
BEGIN
    SELECT array_agg(h.member_id ORDER BY h.member_id), array_agg(h.horizon ORDER BY h.member_id)
        INTO who, since
        FROM flywheel_series_horizons(members, dimensions, stages, ats, retouched, funnel,
                                      engaged_within) h;
    IF who IS NOT NULL THEN
        PERFORM flywheel_series_refresh_from(who, since, funnel, engaged_within);
    END IF;
END
$fn$;

-- A merge, an erasure (the members' every row) and a rebuild (NULL: everyone, from scratch).
CREATE OR REPLACE FUNCTION flywheel_series_refresh(
    members text[], funnel jsonb, engaged_within interval
) RETURNS void LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $fn$
BEGIN
    IF members IS NULL THEN
        DELETE FROM flywheel_entries;
        DELETE FROM flywheel_entry_days;
        DELETE FROM flywheel_spans;
        members := ARRAY(SELECT DISTINCT member_id FROM journey_transitions);
    END IF;
    PERFORM flywheel_series_refresh_from(
        members, array_fill('-infinity'::timestamptz, ARRAY[cardinality(members)]), funnel,
        engaged_within);
END
$fn$;
