-- Awareness state: one row per person (an anonymous visitor id or a member id).
CREATE TABLE IF NOT EXISTS people (
    member_id            text PRIMARY KEY,
    stage                text NOT NULL,
    first_seen_at        timestamptz NOT NULL,
    first_touch_channel  text,
    first_touch_detail   text,
    first_touch_at       timestamptz,
    first_touch_activity text,
    joined_at            timestamptz,
    referred_by          text,
    customer_at          timestamptz,
    touchpoint_ids       text[] NOT NULL DEFAULT '{}',
    touchpoints          integer NOT NULL DEFAULT 0
);

-- Anonymous ids that joined a member at sign-up: their later activity is the member's history.
CREATE TABLE IF NOT EXISTS aliases (
    anonymous_id text PRIMARY KEY,
    member_id    text NOT NULL
);
