-- Patient identity, performance (issue 14; postgres). A record's blocking keys move into its own
-- row (`keys`: the 64-bit FNV-1a hash of each key as stored — its blind index with encryption
-- on — as 16 hex digits each), stamped with the next value of a change counter (`keys_seq`).
-- The engine keeps the postings (key → records) in memory and reads only the rows stamped
-- after what it has seen. The key table made every linked record dirty about ten random
-- B-tree pages. Rows of an older version (`keys_seq = 0`) get their keys on first use,
-- computed from their demographics.
ALTER TABLE identities ADD COLUMN keys TEXT NOT NULL DEFAULT '';
ALTER TABLE identities ADD COLUMN keys_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX identities_keys_seq ON identities (keys_seq);
DROP TABLE identity_keys;

CREATE TABLE identity_keys_seq (
    id    BIGINT PRIMARY KEY NOT NULL CHECK (id = 1),
    value BIGINT NOT NULL
);
INSERT INTO identity_keys_seq (id, value) VALUES (1, 0);
