-- The call's recordings (issue 18, RTC-30): one row per recorded track, its object in the
-- object store (sealed with the data keys, SHA-256 of the plaintext), who started the
-- recording, and the retention class of CN-30 with the time before which it may not be
-- deleted. Times in milliseconds since the epoch (UTC). Rows are never updated.
CREATE TABLE recordings (
    id               TEXT PRIMARY KEY NOT NULL,
    consultation     TEXT NOT NULL,
    facility         TEXT NOT NULL,
    room             TEXT NOT NULL,
    recording        TEXT NOT NULL,
    participant      TEXT NOT NULL,
    role             TEXT NOT NULL,
    source           TEXT NOT NULL,
    kind             TEXT NOT NULL,
    codec            TEXT NOT NULL,
    container        TEXT NOT NULL,
    object_id        TEXT NOT NULL,
    sha256           TEXT NOT NULL,
    bytes            BIGINT NOT NULL,
    packets          BIGINT NOT NULL,
    started_at       BIGINT NOT NULL,
    ended_at         BIGINT NOT NULL,
    started_by       TEXT NOT NULL,
    retention_class  TEXT NOT NULL,
    retain_until     BIGINT NOT NULL
);
CREATE INDEX recordings_consultation ON recordings (consultation, started_at);
