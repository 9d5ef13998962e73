-- A kind may have several tasks per line, one per event of the line (a
-- subscriber's deliveries, docs/subscribers.md): the event joins the unique key. Rows
-- of the kinds with one task per line have the empty event.
ALTER TABLE fulfillment_lines ADD COLUMN event text NOT NULL DEFAULT '';
ALTER TABLE fulfillment_lines DROP CONSTRAINT fulfillment_lines_line_kind;
ALTER TABLE fulfillment_lines ADD CONSTRAINT fulfillment_lines_line_kind_event
    UNIQUE (site, order_number, course_id, kind, event);
