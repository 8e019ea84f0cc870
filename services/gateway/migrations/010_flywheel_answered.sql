-- Issue 14 item 6: "questions answered by peers" (GET /v1/flywheel's peer_answer_share and the
-- dashboard's weekly series) probed flywheel_peer_help once per question in the window
-- (bench/dashboard.py: 0.8 s of the report at 1M members). Each question now keeps the time of
-- the first help a member other than the asker gave the asker in its thread, so "answered
-- before `to`" is a comparison on the question's own row. Kept by services/gateway/flywheel/
-- series.py: refresh_answers, after a batch's questions and peer help, a merge and an erasure.

ALTER TABLE flywheel_questions ADD COLUMN IF NOT EXISTS answered_at timestamptz;

-- the questions a new peer help may answer
CREATE INDEX IF NOT EXISTS flywheel_questions_thread_member
    ON flywheel_questions (thread_id, member_id);
-- a merged asker's questions
CREATE INDEX IF NOT EXISTS flywheel_questions_member ON flywheel_questions (member_id);
-- the window's questions and their answer times, an index-only scan
CREATE INDEX IF NOT EXISTS flywheel_questions_time_answered
    ON flywheel_questions (occurred_at) INCLUDE (answered_at);

UPDATE flywheel_questions q SET answered_at = (
    SELECT min(h.occurred_at) FROM flywheel_peer_help h
    WHERE h.thread_id = q.thread_id AND h.helped_member_id = q.member_id
      AND h.helper_member_id <> q.member_id);
