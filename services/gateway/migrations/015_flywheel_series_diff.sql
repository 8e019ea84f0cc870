-- Issue 16: flywheel_series_refresh (migration 008) writes only the rows that change.
--
-- 008's refresh deleted every flywheel_entries and flywheel_spans row of the batch's members
-- and inserted them all again, moving the day counters down by all the old rows and up by all
-- the new ones. A member's rows mostly stay as they were when one transition arrives (its
-- earlier entries keep their times; only the new entry, and the entry whose next or previous
-- time it becomes, move), so a backfill rewrote the same rows, their four indexes and the
-- shared counters batch after batch: the read model's slowest part in the import of issue 16.
--
-- Now the members' rows are computed as before and compared with the stored ones (a full
-- join on the primary key): a stored row that is no longer computed is deleted, a computed
-- row that is new or whose times differ is upserted, and the counters move by the old
-- versions (-1) and the new versions (+1) of only those rows; an unchanged row is not written.
-- The result is the same rows and counters as 008's (tests/test_flywheel_series.py holds the
-- tables kept batch by batch equal to a rebuild, and the figures equal to full scans).
--
-- A rebuild (members NULL) empties the three tables first and counts everything again from
-- journey_transitions: from scratch, counters included (so no counter is left at 0). A
-- counter whose rows all moved in a batch (a merge, an erasure, a late transition) stays at 0
-- and sums to nothing, as before: a batch never scans the counters.

CREATE OR REPLACE FUNCTION flywheel_series_refresh(
    members text[], funnel jsonb, engaged_within interval
) RETURNS void LANGUAGE plpgsql
-- planned for the members at hand: a generic plan of these statements scans every member
SET plan_cache_mode = force_custom_plan
AS $fn$
BEGIN
    IF members IS NULL THEN
        DELETE FROM flywheel_entries;
        DELETE FROM flywheel_entry_days;
        DELETE FROM flywheel_spans;
        members := ARRAY(SELECT DISTINCT member_id FROM journey_transitions);
    END IF;

    WITH t AS (
            SELECT member_id, dimension, to_stage, occurred_at, seq, event_id
            FROM journey_transitions WHERE member_id = ANY(members)),
        e AS (
            SELECT t.*,
                   lag(occurred_at) OVER (PARTITION BY member_id, dimension, to_stage
                                          ORDER BY occurred_at, seq) AS prev_at,
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
                   lag(occurred_at) OVER (PARTITION BY member_id ORDER BY occurred_at, seq),
                   '-infinity'
            FROM t WHERE dimension = 'awareness' AND to_stage IN ('member', 'customer')
            UNION ALL
            -- joined, and engaged within `engaged_within` of joining
            SELECT 'engaged30', e.event_id, e.member_id, e.occurred_at, e.prev_at, '-infinity'
            FROM e WHERE e.dimension = 'awareness' AND e.to_stage = 'member'
              AND e.engaged_at <= e.occurred_at + engaged_within
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
            SELECT kind, event_id, member_id, at, prev_at, next_at, day, prev_day, next_day
            FROM flywheel_entries WHERE member_id = ANY(members)),
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
    WITH fresh AS (
            SELECT member_id, event_id, dimension, to_stage AS stage,
                   occurred_at AS entered_at, left_at
            FROM (SELECT member_id, event_id, dimension, to_stage, occurred_at,
                         lead(occurred_at) OVER (PARTITION BY member_id, dimension
                                                 ORDER BY occurred_at, seq) AS left_at
                  FROM journey_transitions WHERE member_id = ANY(members)) s
            WHERE left_at IS NOT NULL),
        stored AS (
            SELECT member_id, event_id, dimension, stage, entered_at, left_at
            FROM flywheel_spans WHERE member_id = ANY(members)),
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
