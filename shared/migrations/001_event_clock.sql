-- Event time per input partition (shared/eventtime): the service clock is the minimum of what
-- every partition vouches for, so it moves only as fast as the slowest one.
CREATE TABLE IF NOT EXISTS event_clock (
    topic           text NOT NULL,   -- logical name, no deployment prefix
    partition       int NOT NULL,
    event_time      timestamptz,     -- newest event time read, or the upstream's watermark
    caught_up_since timestamptz,     -- wall clock: read to a log end that has not moved since
    PRIMARY KEY (topic, partition)
);

-- The watermark row is now the service clock itself (lateness already taken off); the old
-- value (the newest event time seen anywhere) was ahead of it, and a clock never moves back.
DELETE FROM watermark;
COMMENT ON TABLE watermark IS 'the service event-time clock: min over input partitions';

-- An outbox row may name its partition; -1 means a copy on every partition (clock ticks and
-- watermarks).
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS partition int;
