-- Every flow of a line (enroll, unenroll, ...) is a task of its own kind:
-- one ledger row per (site, order number, course, kind). Rows written before
-- this migration are enrollments.
ALTER TABLE fulfillment_lines ADD COLUMN kind text NOT NULL DEFAULT 'enroll';
ALTER TABLE fulfillment_lines ADD COLUMN finished_at timestamptz;
ALTER TABLE fulfillment_lines ALTER COLUMN lms_user_id SET DEFAULT 0;
ALTER TABLE fulfillment_lines DROP CONSTRAINT fulfillment_lines_site_order_number_course_id_key;
ALTER TABLE fulfillment_lines ADD CONSTRAINT fulfillment_lines_line_kind UNIQUE (site, order_number, course_id, kind);
-- States are the generic task states; 'enrolled' stays valid for rows an
-- older process finishes during a rolling upgrade, and reads as 'done'.
ALTER TABLE fulfillment_lines DROP CONSTRAINT fulfillment_lines_state_check;
ALTER TABLE fulfillment_lines ADD CONSTRAINT fulfillment_lines_state_check
    CHECK (state IN ('queued', 'running', 'retrying', 'done', 'failed', 'canceled', 'enrolled'));
-- finished_at stays empty on older rows: readers take coalesce(finished_at,
-- enrolled_at), so no row is rewritten here.
