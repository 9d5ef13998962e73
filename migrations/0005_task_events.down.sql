DELETE FROM fulfillment_lines WHERE event <> '';
ALTER TABLE fulfillment_lines DROP CONSTRAINT fulfillment_lines_line_kind_event;
ALTER TABLE fulfillment_lines ADD CONSTRAINT fulfillment_lines_line_kind UNIQUE (site, order_number, course_id, kind);
ALTER TABLE fulfillment_lines DROP COLUMN event;
