-- Security: the hash-chained audit trail and hashed API keys (SQLite).
CREATE TABLE audit_events (
    seq           INTEGER PRIMARY KEY NOT NULL,
    at            INTEGER NOT NULL,
    actor         TEXT NOT NULL,
    role          TEXT NOT NULL,
    facility      TEXT NOT NULL,
    action        TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    source        TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    detail        TEXT NOT NULL,
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_resource ON audit_events (resource_type, resource_id);

-- The head of the chain: the last sequence number and hash. Appending updates it first, which
-- takes the write lock and serialises appenders.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, 'genesis');

-- Append-only: rows cannot be changed or removed through SQL (someone with the file can still
-- do it; `huizhen audit verify` finds it).
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY NOT NULL,
    hash       TEXT NOT NULL,
    sub        TEXT NOT NULL,
    role       TEXT NOT NULL,
    facility   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
