-- Care workflow (issue 15 items 4, 7, 8, 9; STANDARDS CN-20, CN-21; sqlite): prescriptions
-- (snapshot + append-only events), the outbox of workflow events for pipelines, appointments,
-- the de-identified case library, the consultation facts the statistics read, and the runs
-- of scheduled workflow jobs. The rules live in huizhen-domain; these tables only keep state.

-- One row per prescription: where it is now (the fold of its events) and the prescriber's
-- signature waiting for submission. `version` is the number of events; every change is an
-- `UPDATE … WHERE version = <expected>` so two writers cannot both win. `body` is the domain's
-- Prescription JSON, sealed when encryption is on (it names the patient and the drugs).
CREATE TABLE prescriptions (
    id                TEXT PRIMARY KEY NOT NULL,
    consultation_id   TEXT NOT NULL,
    facility          TEXT NOT NULL,
    prescriber        TEXT NOT NULL,
    state             TEXT NOT NULL,
    version           INTEGER NOT NULL,
    body              TEXT NOT NULL,
    pending_signature TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX prescriptions_state ON prescriptions (state, updated_at, id);
CREATE INDEX prescriptions_consultation ON prescriptions (consultation_id);

-- Every event of every prescription, in order (version 1, 2, …): the history is the record.
CREATE TABLE prescription_events (
    prescription_id TEXT NOT NULL,
    version         INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    actor           TEXT NOT NULL,
    at              INTEGER NOT NULL,
    body            TEXT NOT NULL,
    PRIMARY KEY (prescription_id, version)
);
CREATE TRIGGER prescription_events_no_update BEFORE UPDATE ON prescription_events
BEGIN SELECT RAISE(ABORT, 'prescription_events is append-only'); END;
CREATE TRIGGER prescription_events_no_delete BEFORE DELETE ON prescription_events
BEGIN SELECT RAISE(ABORT, 'prescription_events is append-only'); END;

-- Workflow events for pipelines (transactional outbox): written in the transaction of the
-- change they announce, then submitted to the configured pipeline's journal by the relay
-- (dedup key `workflow-outbox:<id>`), which leases a row while it works on it.
CREATE TABLE workflow_outbox (
    id          TEXT PRIMARY KEY NOT NULL,
    topic       TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    facility    TEXT NOT NULL,
    pipeline    TEXT,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    lease_until INTEGER,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    sent_at     INTEGER,
    message_id  TEXT
);
CREATE INDEX workflow_outbox_pending ON workflow_outbox (sent_at, created_at);
CREATE INDEX workflow_outbox_resource ON workflow_outbox (resource_id);

-- Bookings of scheduled consultations. `patient_key` is the patient id, or its blind index
-- when encryption is on; `body` is the domain's Booking JSON (sealed when encryption is on).
CREATE TABLE appointments (
    id              TEXT PRIMARY KEY NOT NULL,
    consultation_id TEXT NOT NULL,
    expert_id       TEXT NOT NULL,
    patient_key     TEXT NOT NULL,
    facility        TEXT NOT NULL,
    start_at        INTEGER NOT NULL,
    end_at          INTEGER NOT NULL,
    status          TEXT NOT NULL,
    version         INTEGER NOT NULL,
    body            TEXT NOT NULL,
    booked_at       INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX appointments_expert ON appointments (expert_id, start_at);
CREATE INDEX appointments_patient ON appointments (patient_key, start_at);
CREATE INDEX appointments_consultation ON appointments (consultation_id);
CREATE INDEX appointments_status ON appointments (status, start_at);

-- Rows a booking locks for the length of its transaction (expert, patient, consultation), so
-- that two bookings that could conflict are decided one after the other (PostgreSQL; SQLite
-- has one writer anyway).
CREATE TABLE care_locks (
    key TEXT PRIMARY KEY NOT NULL,
    n   INTEGER NOT NULL
);

-- The de-identified case library: the domain's CaseRecord JSON (no patient in it) and the
-- columns a search pre-selects on; the domain then applies the exact rules.
CREATE TABLE case_library (
    case_id      TEXT PRIMARY KEY NOT NULL,
    completed_on TEXT NOT NULL,
    department   TEXT NOT NULL,
    dept_top     TEXT NOT NULL,
    misdiagnosis INTEGER NOT NULL,
    rare_disease INTEGER NOT NULL,
    emergency    INTEGER NOT NULL,
    expert_id    TEXT NOT NULL,
    body         TEXT NOT NULL,
    added_at     INTEGER NOT NULL
);
CREATE INDEX case_library_dept ON case_library (dept_top, completed_on);
CREATE INDEX case_library_completed ON case_library (completed_on);

-- Each diagnosis of a library case: the normalised code, its category and ICD-10 chapter.
CREATE TABLE case_library_codes (
    case_id  TEXT NOT NULL,
    code     TEXT NOT NULL,
    category TEXT NOT NULL,
    chapter  INTEGER,
    PRIMARY KEY (case_id, code)
) WITHOUT ROWID;
CREATE INDEX case_library_codes_code ON case_library_codes (code);
CREATE INDEX case_library_codes_category ON case_library_codes (category);
CREATE INDEX case_library_codes_chapter ON case_library_codes (chapter);

-- One row per consultation with the timeline facts the statistics need (the domain's
-- ConsultationFacts), kept by the consultation workflow in the transaction of each change.
CREATE TABLE consultation_facts (
    consultation_id TEXT PRIMARY KEY NOT NULL,
    facility        TEXT NOT NULL,
    department      TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    accepted_at     INTEGER,
    completed_at    INTEGER,
    cancelled       INTEGER NOT NULL DEFAULT 0,
    failed          INTEGER NOT NULL DEFAULT 0,
    sla_breached    INTEGER NOT NULL DEFAULT 0,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX consultation_facts_created ON consultation_facts (created_at);
CREATE INDEX consultation_facts_facility ON consultation_facts (facility, created_at);

-- Scheduled workflow jobs (the stats export): one row per job and tick, inserted by the node
-- that runs it, so each tick runs once however many engine processes share the store.
CREATE TABLE workflow_job_runs (
    job         TEXT NOT NULL,
    tick        TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    outcome     TEXT,
    PRIMARY KEY (job, tick)
);
