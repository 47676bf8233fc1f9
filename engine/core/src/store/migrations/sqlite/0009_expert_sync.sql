-- Expert registry change sequence (issue 14, performance; sqlite). Every change to an expert
-- (import, heartbeat, load) or an agreement takes the next value of one counter, in the same
-- transaction, and stamps its row with it. A `Store` keeps the registry in memory and, before
-- each match, reads the counter (one row); only when it moved does it read the rows stamped
-- after what it has. Writers serialise on the counter row, so the stamps become visible in
-- order and a reader never skips one.
CREATE TABLE expert_sync (
    id  INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO expert_sync (id, seq) VALUES (1, 1);

ALTER TABLE experts ADD COLUMN seq INTEGER NOT NULL DEFAULT 1;
CREATE INDEX experts_seq ON experts (seq);
ALTER TABLE expert_agreements ADD COLUMN seq INTEGER NOT NULL DEFAULT 1;
CREATE INDEX expert_agreements_seq ON expert_agreements (seq);
