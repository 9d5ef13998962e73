-- Support finds a shop's lines by the learner's email (GET /orders?email=),
-- compared case-insensitively. The email is in the task's payload; an index
-- on the expression covers the rows written before it, and needs no column
-- the ledger writes nor a rewrite of the table.
CREATE INDEX fulfillment_lines_email ON fulfillment_lines (lower(btrim(payload->>'email'))) WHERE payload ? 'email';
