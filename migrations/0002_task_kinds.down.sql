DELETE FROM fulfillment_lines WHERE kind <> 'enroll';
UPDATE fulfillment_lines SET state = 'enrolled', enrolled_at = coalesce(enrolled_at, finished_at) WHERE state = 'done';
UPDATE fulfillment_lines SET state = 'failed' WHERE state = 'canceled';
ALTER TABLE fulfillment_lines DROP CONSTRAINT fulfillment_lines_state_check;
ALTER TABLE fulfillment_lines ADD CONSTRAINT fulfillment_lines_state_check
    CHECK (state IN ('queued', 'running', 'retrying', 'enrolled', 'failed'));
ALTER TABLE fulfillment_lines DROP CONSTRAINT fulfillment_lines_line_kind;
ALTER TABLE fulfillment_lines ADD CONSTRAINT fulfillment_lines_site_order_number_course_id_key UNIQUE (site, order_number, course_id);
ALTER TABLE fulfillment_lines DROP COLUMN finished_at;
ALTER TABLE fulfillment_lines DROP COLUMN kind;
