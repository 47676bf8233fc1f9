-- Journal v2 (issue 13): the message bodies out of the state row. A state change (processing,
-- done, failed) now rewrites the ~200-byte state row and moves one index entry, not the
-- 1.2 KB row with its body and two state indexes. Bodies are written once, at the append, and
-- read by id; with encryption on they stay sealed (bound to their message and field "body").
CREATE TABLE bodies (
    id   TEXT PRIMARY KEY NOT NULL,
    body BLOB NOT NULL
);
INSERT INTO bodies (id, body) SELECT id, body FROM messages;
ALTER TABLE messages DROP COLUMN body;

-- One state index, of what is not done (done is most of the journal and never looked up by
-- state alone): queries by state add `state <> 'done'` so that SQLite uses it.
DROP INDEX messages_state;
DROP INDEX messages_pipeline_state;
CREATE INDEX messages_open ON messages (state, pipeline, id) WHERE state <> 'done';

-- A `journal` sink whose output is the message as received records a reference (body NULL:
-- the message's body) instead of a second copy; a changed output still stores its bytes.
CREATE TABLE effects_v2 (
    message_id  TEXT NOT NULL,
    sink        TEXT NOT NULL,
    pipeline    TEXT NOT NULL,
    body        BLOB,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (message_id, sink)
);
INSERT INTO effects_v2 (message_id, sink, pipeline, body, recorded_at)
    SELECT message_id, sink, pipeline, body, recorded_at FROM effects;
DROP TABLE effects;
ALTER TABLE effects_v2 RENAME TO effects;
