-- Lines awaiting an account go back to 'retrying': an older version looks
-- for the account once more and, finding none, fails them.
UPDATE fulfillment_lines SET state = 'retrying' WHERE state = 'awaiting_account';
DROP INDEX fulfillment_lines_open;
CREATE INDEX fulfillment_lines_open ON fulfillment_lines (updated_at) WHERE state IN ('queued', 'running', 'retrying');
ALTER TABLE fulfillment_lines DROP CONSTRAINT fulfillment_lines_state_check;
ALTER TABLE fulfillment_lines ADD CONSTRAINT fulfillment_lines_state_check
    CHECK (state IN ('queued', 'running', 'retrying', 'done', 'failed', 'canceled', 'enrolled'));
