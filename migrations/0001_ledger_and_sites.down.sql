DROP TABLE sites;
DROP TABLE fulfillment_lines;
