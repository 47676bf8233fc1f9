-- Where a polling source has got to (the `fhir_poll` source's `_lastUpdated` watermark): one
-- row per source key (pipeline and source), moved forward only after the messages it covers
-- are journaled, so a restart resumes there and the journal's dedup absorbs any overlap.
CREATE TABLE source_cursors (
    source TEXT PRIMARY KEY,
    cursor TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
