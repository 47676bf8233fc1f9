-- The consultation workflow (issue 15; STANDARDS FHIR-10, FHIR-11, MATCH-20, MATCH-21; sqlite).
-- A consultation is the fold of its events (the domain's `Consultation::replay`); the store
-- keeps the events append-only and the folded snapshot beside them, so a read is one row and a
-- command is one transaction: read the snapshot, decide, append the events, update the
-- snapshot `WHERE version = old` (0 rows: a concurrent writer won, decide again).

-- One row per consultation: the snapshot (the domain's Consultation JSON; sealed `hze:…` when
-- encryption at rest is on, since it holds the case summary) and, in clear, what lists filter
-- on. `candidates` is the ranked list of experts from matching (no patient data), which the
-- SLA sweep offers in turn; `source_key` makes creation from a pipeline idempotent.
CREATE TABLE consultations (
    id                  TEXT PRIMARY KEY NOT NULL,
    version             INTEGER NOT NULL,
    state               TEXT NOT NULL,
    requesting_facility TEXT NOT NULL,
    expert_facility     TEXT,
    expert_id           TEXT,
    patient_id          INTEGER NOT NULL,
    department          TEXT NOT NULL,
    urgency             TEXT NOT NULL,
    service_type        TEXT NOT NULL,
    snapshot            TEXT NOT NULL,
    candidates          TEXT NOT NULL DEFAULT '[]',
    match_decision      TEXT,
    source_key          TEXT UNIQUE,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
CREATE INDEX consultations_state ON consultations (state, id);
CREATE INDEX consultations_patient ON consultations (patient_id);
CREATE INDEX consultations_department ON consultations (department, id);

-- The facilities that may read a consultation: the requesting facility and the facility of
-- every expert it was offered to (the facility scope of reads, lists and the event stream).
CREATE TABLE consultation_facilities (
    facility        TEXT NOT NULL,
    consultation_id TEXT NOT NULL,
    PRIMARY KEY (facility, consultation_id)
) WITHOUT ROWID;
CREATE INDEX consultation_facilities_consultation ON consultation_facilities (consultation_id);

-- Every event, append-only: who (actor, role), when, which plugin version decided, the state
-- after it, and the event itself (JSON, sealed with encryption on). `seq` orders the events of
-- all consultations for the live stream (`Last-Event-ID`); events are appended while the
-- audit chain's head is held, so `seq` order is commit order.
CREATE TABLE consultation_events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    consultation_id TEXT NOT NULL,
    version         INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    state           TEXT NOT NULL,
    event           TEXT NOT NULL,
    actor           TEXT NOT NULL,
    role            TEXT NOT NULL,
    at              INTEGER NOT NULL,
    plugin_name     TEXT,
    plugin_version  TEXT,
    UNIQUE (consultation_id, version)
);
CREATE TRIGGER consultation_events_no_update BEFORE UPDATE ON consultation_events
BEGIN SELECT RAISE(ABORT, 'consultation_events is append-only'); END;
CREATE TRIGGER consultation_events_no_delete BEFORE DELETE ON consultation_events
BEGIN SELECT RAISE(ABORT, 'consultation_events is append-only'); END;

-- Durable timers: the offer deadline of the current attempt, or "next step now" after a
-- decline. The sweep takes the due ones (also those that fell due while the engine was down).
CREATE TABLE consultation_timers (
    consultation_id TEXT NOT NULL,
    kind            TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    due_at          INTEGER NOT NULL,
    done            INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (consultation_id, kind, attempt)
);
CREATE INDEX consultation_timers_due ON consultation_timers (done, due_at);
