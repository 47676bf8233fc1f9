-- Patient identity (issue 14, PostgreSQL): the identity index behind `match_patient`, the PIX/PDQ-like API
-- and `huizhen patients`. One row of `identities` per facility identifier (facility + local
-- id), linked to a master person (`persons`). `person` holds the normalised demographics as
-- JSON, sealed (`hze:…`) when encryption at rest is on; `identity_keys` holds the blocking
-- keys (their blind index `hmac:…` with encryption on), so a lookup never scans the index.
CREATE TABLE persons (
    id         BIGSERIAL PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE identities (
    id         BIGSERIAL PRIMARY KEY,
    facility   TEXT NOT NULL,
    local_id   TEXT NOT NULL,
    person_id  BIGINT NOT NULL,
    person     TEXT NOT NULL,
    active     BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (facility, local_id)
);
CREATE INDEX identities_person ON identities (person_id);

CREATE TABLE identity_keys (
    key         TEXT NOT NULL,
    identity_id BIGINT NOT NULL,
    PRIMARY KEY (key, identity_id)
);
CREATE INDEX identity_keys_identity ON identity_keys (identity_id);

-- Every decision and every change of a link, with what it changed (so it can be undone):
-- action is match, link, unlink, relink, merge, unmerge, accept or reject; `batch` groups
-- the rows of one operation (a merge moves several records); `decision` is the matcher's JSON
-- (grades, scores, per-field contributions, rules, findings: identifiers, no demographics).
CREATE TABLE identity_history (
    id          BIGSERIAL PRIMARY KEY,
    batch       TEXT NOT NULL,
    identity_id BIGINT NOT NULL,
    action      TEXT NOT NULL,
    from_person BIGINT,
    to_person   BIGINT,
    from_active BIGINT,
    to_active   BIGINT,
    grade       TEXT,
    score       DOUBLE PRECISION,
    decision    TEXT,
    actor       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    undone      BIGINT NOT NULL DEFAULT 0,
    at          BIGINT NOT NULL
);
CREATE INDEX identity_history_identity ON identity_history (identity_id, id);
CREATE INDEX identity_history_batch ON identity_history (batch);

-- The review queue: probable and possible candidates of a record, for a human.
CREATE TABLE identity_reviews (
    id               BIGSERIAL PRIMARY KEY,
    identity_id      BIGINT NOT NULL,
    candidate_person BIGINT NOT NULL,
    grade            TEXT NOT NULL,
    score            DOUBLE PRECISION NOT NULL,
    decision         TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending',
    decided_by       TEXT,
    reason           TEXT,
    decided_at       BIGINT,
    created_at       BIGINT NOT NULL,
    UNIQUE (identity_id, candidate_person)
);
CREATE INDEX identity_reviews_state ON identity_reviews (state, id);
