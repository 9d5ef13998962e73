DROP INDEX fulfillment_lines_open_created;
DROP INDEX fulfillment_lines_state;
DROP INDEX fulfillment_lines_username;
DROP INDEX fulfillment_lines_lms_user;
DROP INDEX fulfillment_lines_listing;
