-- Operators list lines newest first, filtered (README, "Problem orders"): the keyset
-- (created_at, id) of a line's first task, the learner, and the oldest line
-- that may still run (coordinator_oldest_open_line_age_seconds).
CREATE INDEX fulfillment_lines_listing ON fulfillment_lines (created_at DESC, id DESC);
CREATE INDEX fulfillment_lines_lms_user ON fulfillment_lines (lms_user_id) WHERE lms_user_id <> 0;
CREATE INDEX fulfillment_lines_username ON fulfillment_lines (username) WHERE username <> '';
CREATE INDEX fulfillment_lines_state ON fulfillment_lines (state, created_at DESC, id DESC);
CREATE INDEX fulfillment_lines_open_created ON fulfillment_lines (created_at) WHERE state IN ('queued', 'running', 'retrying');
