-- An enrollment whose learner has no LMS account yet waits for it in state
-- 'awaiting_account' (README, "Learners by email"). The new check only allows more, so the rows
-- are validated without rewriting any.
ALTER TABLE fulfillment_lines DROP CONSTRAINT fulfillment_lines_state_check;
ALTER TABLE fulfillment_lines ADD CONSTRAINT fulfillment_lines_state_check
    CHECK (state IN ('queued', 'running', 'retrying', 'awaiting_account', 'done', 'failed', 'canceled', 'enrolled')) NOT VALID;
ALTER TABLE fulfillment_lines VALIDATE CONSTRAINT fulfillment_lines_state_check;
-- The reconciler re-queues every task that may still run, awaiting ones too.
DROP INDEX fulfillment_lines_open;
CREATE INDEX fulfillment_lines_open ON fulfillment_lines (updated_at)
    WHERE state IN ('queued', 'running', 'retrying', 'awaiting_account');
-- fulfillment_lines_open_created is left as it is: the age of the oldest open
-- line (coordinator_oldest_open_line_age_seconds) leaves out lines awaiting a
-- person's registration, which may wait 30 days without being stuck.
