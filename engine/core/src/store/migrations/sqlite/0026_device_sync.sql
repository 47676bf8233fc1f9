-- Device binding change counter (issue 25, performance; sqlite). Every binding and unbinding
-- takes the next value in its own transaction (first, so concurrent changes of bindings
-- serialise on this row). The `device_reading` step keeps the bindings and their patients in
-- memory and, per reading, reads this counter and the identity index's (identity_keys_seq)
-- in one one-row query; when either moved, the copy is dropped and read again.
CREATE TABLE device_sync (
    id  INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO device_sync (id, seq) VALUES (1, 1);
