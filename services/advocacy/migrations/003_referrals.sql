-- Referrals waiting for the member they brought in to become engaged: the referrer is credited
-- only then (docs/JOURNEY-MODEL.md, Advocacy that cannot be bought). The sign-up (awareness's
-- member.acquired.v1) and the engagement (engagement's stage change) arrive on different topics
-- in either order, so each half is kept until the other comes; `credited` makes it once.
CREATE TABLE IF NOT EXISTS referrals (
    joined_member_id   text PRIMARY KEY,
    referrer_member_id text,
    acquired_at        timestamptz,
    engaged_at         timestamptz,
    engaged_cause      text,
    credited           boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS referrals_referrer ON referrals (referrer_member_id);
