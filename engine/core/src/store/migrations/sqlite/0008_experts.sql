-- Expert matching (issue 14, STANDARDS MATCH-01, MATCH-30, MATCH-31; sqlite): the expert
-- registry with index tables so that a candidate lookup never scans, the cooperation
-- agreements, presence and load, the match decisions, overrides and the assignments the
-- fairness report counts.

-- One row per expert: the registry facts as the domain's Expert JSON (runtime state left at
-- its defaults), and the runtime state in columns that heartbeats and load updates change.
CREATE TABLE experts (
    id                 TEXT PRIMARY KEY NOT NULL,
    facility           TEXT NOT NULL,
    body               TEXT NOT NULL,
    last_heartbeat     INTEGER,
    open_consultations INTEGER NOT NULL DEFAULT 0,
    sessions_today     INTEGER NOT NULL DEFAULT 0,
    -- Bumped by every import of the expert: decoded bodies are cached by (id, version).
    version            INTEGER NOT NULL DEFAULT 1,
    updated_at         INTEGER NOT NULL
);

-- A candidate lookup reads only these columns (the decoded bodies are cached by version): a
-- covering index keeps it off the wide rows, whose JSON bodies would crowd the page cache.
CREATE INDEX experts_state ON experts (id, version, last_heartbeat, open_consultations, sessions_today);

-- The index tables are WITHOUT ROWID: the primary key is the whole row, one b-tree.
-- Department index: each of an expert's departments and every dotted ancestor (03.02 → 03).
CREATE TABLE expert_departments (
    department TEXT NOT NULL,
    expert_id  TEXT NOT NULL,
    PRIMARY KEY (department, expert_id)
) WITHOUT ROWID;
CREATE INDEX expert_departments_expert ON expert_departments (expert_id);

-- Expertise index: the ICD-10 category (I25) of each declared code.
CREATE TABLE expert_expertise (
    category  TEXT NOT NULL,
    expert_id TEXT NOT NULL,
    PRIMARY KEY (category, expert_id)
) WITHOUT ROWID;
CREATE INDEX expert_expertise_expert ON expert_expertise (expert_id);

-- Cooperation agreements (CN-02), looked up by the requesting facility.
CREATE TABLE expert_agreements (
    id                  TEXT PRIMARY KEY NOT NULL,
    requesting_facility TEXT NOT NULL,
    expert_facility     TEXT NOT NULL,
    body                TEXT NOT NULL,
    updated_at          INTEGER NOT NULL
);
CREATE INDEX expert_agreements_requesting ON expert_agreements (requesting_facility);

-- Every match decision in full (MATCH-31), by decision id and by case id.
CREATE TABLE match_decisions (
    id                  TEXT PRIMARY KEY NOT NULL,
    case_id             TEXT NOT NULL,
    requesting_facility TEXT NOT NULL,
    department          TEXT NOT NULL,
    decided_at          INTEGER NOT NULL,
    body                TEXT NOT NULL
);
CREATE INDEX match_decisions_case ON match_decisions (case_id);

-- Coordinators' overrides: who, why, when (the domain's Override as JSON too).
CREATE TABLE match_overrides (
    id          TEXT PRIMARY KEY NOT NULL,
    decision_id TEXT NOT NULL,
    expert_id   TEXT NOT NULL,
    reason      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    at          INTEGER NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX match_overrides_decision ON match_overrides (decision_id);

-- Who each decision's case went to first (the first selected expert, or the override's), for
-- the fairness report (MATCH-30); accepted_at once the expert accepted.
CREATE TABLE expert_assignments (
    decision_id         TEXT PRIMARY KEY NOT NULL,
    expert_id           TEXT NOT NULL,
    department          TEXT NOT NULL,
    requesting_facility TEXT NOT NULL,
    assigned_at         INTEGER NOT NULL,
    accepted_at         INTEGER
);
CREATE INDEX expert_assignments_department ON expert_assignments (department, assigned_at);
