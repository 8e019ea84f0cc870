-- Issue 14 item 6: the precomputed series behind GET /v1/flywheel (services/gateway/flywheel/
-- series.py), so the report reads per-day counters instead of scanning every transition.
-- Measured at 100k and 1M members by bench/dashboard.py (docs/PERFORMANCE.md).
--
-- Every figure of the report that counts "members who entered X in the window" (entered per
-- stage, new members, the conversions, the health ratios' members and new members engaged
-- within 30 days, first touch) is a count of *entries*: one row per transition into X, with
-- the member's previous entry into X (prev_at) and, for a conversion, the member's first
-- arrival in the target stage at or after it (next_at). A member entered X in [from, to) once
-- per window: its first entry in the window is the one row with from <= at < to and
-- prev_at < from; it converted when that row's next_at < to. So each figure is
--
--     count(*) WHERE at in [from, to) AND (prev_at IS NULL OR prev_at < from) AND next_at < to
--
-- and is summed from flywheel_entry_days (the same rows counted per UTC day of at, prev_at and
-- next_at) for the days that lie wholly inside or outside the bounds, plus the rows of
-- flywheel_entries whose at, prev_at or next_at falls on the day of `from` or `to`, compared
-- exactly: the same figure as the scan, for any window.
--
-- Kept by flywheel_series_refresh(members): a member's rows are recomputed from
-- journey_transitions (and its first touch) whenever a batch, a merge or an erasure touches
-- the member, and the day counters move by the difference, in the same transaction.

CREATE TABLE IF NOT EXISTS flywheel_entries (
    kind     text NOT NULL,      -- enter:<dimension>:<stage> | convert:<i> | joined | engaged30
                                 -- | touch:<channel>
    event_id text NOT NULL,      -- the transition into the stage
    member_id text NOT NULL,
    at       timestamptz NOT NULL,
    prev_at  timestamptz,        -- the member's previous entry of the same kind; NULL: first
    next_at  timestamptz NOT NULL,  -- the condition's time: '-infinity' when there is none
    day      date NOT NULL GENERATED ALWAYS AS ((at AT TIME ZONE 'UTC')::date) STORED,
    prev_day date NOT NULL
        GENERATED ALWAYS AS (coalesce((prev_at AT TIME ZONE 'UTC')::date, '-infinity')) STORED,
    next_day date NOT NULL GENERATED ALWAYS AS ((next_at AT TIME ZONE 'UTC')::date) STORED,
    PRIMARY KEY (member_id, kind, event_id)
);
-- the rows a boundary day makes ambiguous, read exactly
CREATE INDEX IF NOT EXISTS flywheel_entries_day ON flywheel_entries (day);
CREATE INDEX IF NOT EXISTS flywheel_entries_prev_day ON flywheel_entries (prev_day)
    WHERE prev_day <> '-infinity';
CREATE INDEX IF NOT EXISTS flywheel_entries_next_day ON flywheel_entries (next_day)
    WHERE next_day <> '-infinity';

CREATE TABLE IF NOT EXISTS flywheel_entry_days (
    kind     text NOT NULL,
    day      date NOT NULL,
    prev_day date NOT NULL,      -- '-infinity': no previous entry
    next_day date NOT NULL,      -- '-infinity': no condition
    n        bigint NOT NULL,
    PRIMARY KEY (kind, day, prev_day, next_day)
);

-- Time in stage: one row per stage a member left (the next transition in the same dimension),
-- so the median reads the spans that ended in the window instead of a window function over
-- every transition.
CREATE TABLE IF NOT EXISTS flywheel_spans (
    member_id  text NOT NULL,
    event_id   text NOT NULL,    -- the transition into the stage
    dimension  text NOT NULL,
    stage      text NOT NULL,
    entered_at timestamptz NOT NULL,
    left_at    timestamptz NOT NULL,
    PRIMARY KEY (member_id, event_id)
);
CREATE INDEX IF NOT EXISTS flywheel_spans_left
    ON flywheel_spans (left_at, dimension, stage) INCLUDE (entered_at);

-- The members' rows again from journey_transitions (NULL: everyone, from scratch) and the day
-- counters moved by the difference. `funnel` is services/gateway/flywheel/rules.py's FUNNEL as
-- JSON ([[from dimension, from stage], [to dimension, [to stages]]], ...), `engaged_within`
-- the health ratio's 30 days: the caller passes both, so the rules stay in Python.
CREATE OR REPLACE FUNCTION flywheel_series_refresh(
    members text[], funnel jsonb, engaged_within interval
) RETURNS void LANGUAGE plpgsql
-- planned for the members at hand: a generic plan of these statements scans every member
SET plan_cache_mode = force_custom_plan
AS $fn$
DECLARE
    everyone boolean := members IS NULL;
BEGIN
    IF everyone THEN
        members := ARRAY(SELECT member_id FROM journey_transitions
                         UNION SELECT member_id FROM flywheel_entries
                         UNION SELECT member_id FROM flywheel_spans);
    END IF;
    -- out: the members' old rows, and their counts
    WITH gone AS (DELETE FROM flywheel_entries WHERE member_id = ANY(members)
                  RETURNING kind, day, prev_day, next_day)
        INSERT INTO flywheel_entry_days AS d (kind, day, prev_day, next_day, n)
        SELECT kind, day, prev_day, next_day, -count(*) FROM gone
        GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT (kind, day, prev_day, next_day) DO UPDATE SET n = d.n + EXCLUDED.n;
    DELETE FROM flywheel_spans WHERE member_id = ANY(members);

    -- in: their rows now, and their counts
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
        fresh AS (
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
        added AS (
            INSERT INTO flywheel_entries (kind, event_id, member_id, at, prev_at, next_at)
            SELECT kind, event_id, member_id, at, prev_at, next_at FROM fresh
            WHERE next_at IS NOT NULL  -- a conversion never reached: never counted
            RETURNING kind, day, prev_day, next_day)
        INSERT INTO flywheel_entry_days AS d (kind, day, prev_day, next_day, n)
        SELECT kind, day, prev_day, next_day, count(*) FROM added
        GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT (kind, day, prev_day, next_day) DO UPDATE SET n = d.n + EXCLUDED.n;

    INSERT INTO flywheel_spans (member_id, event_id, dimension, stage, entered_at, left_at)
        SELECT member_id, event_id, dimension, to_stage, occurred_at, left_at
        FROM (SELECT member_id, event_id, dimension, to_stage, occurred_at,
                     lead(occurred_at) OVER (PARTITION BY member_id, dimension
                                             ORDER BY occurred_at, seq) AS left_at
              FROM journey_transitions WHERE member_id = ANY(members)) s
        WHERE left_at IS NOT NULL;

    -- A counter whose rows all moved (a merge, an erasure, a late transition) stays at 0 and
    -- sums to nothing; pruned on a rebuild only, so a batch never scans the counters.
    IF everyone THEN
        DELETE FROM flywheel_entry_days WHERE n = 0;
    END IF;
END
$fn$;

-- A database that already holds transitions gets its series now (a fresh one: nothing to do).
-- The funnel here is FUNNEL as it stood (tests/test_flywheel_series.py holds the two equal).
SELECT flywheel_series_refresh(
    NULL,
    '[[["awareness", "visitor"], ["awareness", ["member", "merged"]]],
      [["awareness", "member"], ["engagement", ["engaged"]]],
      [["engagement", "engaged"], ["advocacy", ["advocate"]]],
      [["advocacy", "advocate"], ["advocacy", ["champion"]]],
      [["awareness", "member"], ["awareness", ["customer"]]],
      [["awareness", "customer"], ["awareness", ["retained"]]],
      [["engagement", "at_risk"], ["engagement", ["reactivated"]]]]'::jsonb,
    interval '30 days'
) WHERE EXISTS (SELECT 1 FROM journey_transitions);
