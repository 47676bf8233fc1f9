-- The journal: every accepted message, its state and its delivery effects (PostgreSQL).
CREATE TABLE messages (
    id              TEXT PRIMARY KEY NOT NULL,
    facility        TEXT NOT NULL,
    pipeline        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    body            BYTEA NOT NULL,
    headers         TEXT NOT NULL,
    source          TEXT NOT NULL,
    received_at     BIGINT NOT NULL,
    trace_id        TEXT NOT NULL,
    dedup_key       TEXT,
    body_hash       TEXT,
    parent_id       TEXT,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    last_error      TEXT,
    updated_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX messages_dedup ON messages (pipeline, dedup_key, body_hash);
CREATE INDEX messages_due ON messages (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX messages_pipeline_state ON messages (pipeline, state, id);
CREATE INDEX messages_state ON messages (state, id);

CREATE TABLE message_errors (
    message_id TEXT NOT NULL,
    attempt    BIGINT NOT NULL,
    at         BIGINT NOT NULL,
    step       TEXT NOT NULL,
    error      TEXT NOT NULL
);
CREATE INDEX message_errors_message ON message_errors (message_id);

CREATE TABLE effects (
    message_id  TEXT NOT NULL,
    sink        TEXT NOT NULL,
    pipeline    TEXT NOT NULL,
    body        BYTEA NOT NULL,
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (message_id, sink)
);
