-- Safe reprocess (issue 24, PostgreSQL): a reprocess never erases what happened before it. Every
-- reprocess of a message is a row here (when, from which state after how many attempts, whether
-- it had been refused at intake and was reprocessed on explicit request, who asked); the errors
-- of earlier attempts stay in message_errors, and a message its source refused keeps its reason
-- there as its intake row (attempt 0, step 'intake', written by the journal at the append).
CREATE TABLE message_reprocesses (
    message_id  TEXT NOT NULL,
    at          BIGINT NOT NULL,
    from_state  TEXT NOT NULL,
    attempts    BIGINT NOT NULL,
    refused     BIGINT NOT NULL,
    actor       TEXT NOT NULL
);
CREATE INDEX message_reprocesses_message ON message_reprocesses (message_id, at);
