-- Scale-out: which engine process answers for a message, and the processes' heartbeats
-- (SQLite).
ALTER TABLE messages ADD COLUMN owner TEXT;
CREATE INDEX messages_in_flight_owner ON messages (owner)
    WHERE owner IS NOT NULL AND state IN ('received', 'processing');

CREATE TABLE nodes (
    id           TEXT PRIMARY KEY NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    queue        TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
