-- What a task recorded when it was done (a flow's result, such as an
-- entitlement's uuid, needed to revoke it). The course_id column holds the
-- line's item: a course run key, or a course uuid for an entitlement line.
ALTER TABLE fulfillment_lines ADD COLUMN result text NOT NULL DEFAULT '';
