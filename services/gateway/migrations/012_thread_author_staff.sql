-- What a thread's later replies need to know about it, where the platform says so only
-- outside the reply: whether its author is staff (Discourse's topic payload names its creator
-- without the staff flag, which the topic's first post carries) and whether it asks a question
-- (a Discourse topic tagged `question`; its replies do not say). Replies then carry
-- target.thread_author_is_team_member and target.thread_is_question, so engagement decides
-- peer help from the reply itself, whichever partition it reads first.
ALTER TABLE webhook_thread_authors ADD COLUMN IF NOT EXISTS author_is_staff boolean;
ALTER TABLE webhook_thread_authors ADD COLUMN IF NOT EXISTS is_question boolean;
