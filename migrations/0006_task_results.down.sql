ALTER TABLE fulfillment_lines DROP COLUMN result;
