-- The fulfillment ledger: one row per (site, order number, course), the
-- system of record when database.url is set.
CREATE TABLE fulfillment_lines (
    id            bigserial PRIMARY KEY,
    site          text        NOT NULL,
    order_number  text        NOT NULL,
    course_id     text        NOT NULL,
    lms_user_id   bigint      NOT NULL,
    username      text        NOT NULL DEFAULT '',
    mode          text        NOT NULL,
    state         text        NOT NULL CHECK (state IN ('queued', 'running', 'retrying', 'enrolled', 'failed')),
    attempts      integer     NOT NULL DEFAULT 0,
    last_error    text        NOT NULL DEFAULT '',
    request_id    text        NOT NULL DEFAULT '',
    task_id       text        NOT NULL,
    payload       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    enrolled_at   timestamptz,
    UNIQUE (site, order_number, course_id)
);

-- The reconciler scans only lines that are not final.
CREATE INDEX fulfillment_lines_open ON fulfillment_lines (updated_at) WHERE state IN ('queued', 'running', 'retrying');

-- LMS sites beyond the default one from the YAML `lms:` section. Secrets
-- are AES-GCM ciphertexts under database.secret_key.
CREATE TABLE sites (
    name               text PRIMARY KEY,
    lms_url            text        NOT NULL,
    oauth_url          text        NOT NULL DEFAULT '',
    client_id          text        NOT NULL,
    client_secret_enc  bytea       NOT NULL,
    api_key_enc        bytea,
    timeout_ms         integer     NOT NULL DEFAULT 7000,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
