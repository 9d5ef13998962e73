DROP INDEX fulfillment_lines_email;
