-- Ordered pipelines (issue 23): each message of a pipeline with an ordering_key carries its
-- key's stable hash and its partition (hash % concurrency, recomputed at start when the
-- concurrency changed), so the feeder takes waiting messages up one partition at a time and a
-- partition whose head of line is retrying holds only its own keys.
ALTER TABLE messages ADD COLUMN ordering_hash BIGINT;
ALTER TABLE messages ADD COLUMN part BIGINT;
CREATE INDEX messages_due_part ON messages (pipeline, part, next_attempt_at, id)
    WHERE next_attempt_at IS NOT NULL AND part IS NOT NULL;
