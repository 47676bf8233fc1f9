-- DICOM study index (issue 17; STANDARDS DCM-01, DCM-04, DCM-05; sqlite): what the `dicom`
-- source received, by study, series and instance. The instances themselves are files in the
-- source's object store (`path`); these rows are what C-FIND and the workflow search.
--
-- Patient ID and accession number are identifiers and stay in clear (they are the keys the
-- patient index and consultations are linked by, like identities.local_id); the patient's
-- name, birth date and sex are one JSON value, sealed with the message-body keyring when
-- encryption is on (bound to `dicom/<study uid>`, field `patient`).

-- One row per study. Counts and bytes are kept by every indexing transaction. A study is
-- "complete" when no instance came for the source's `study_complete_after`: the source's
-- sweep sets completed_at (and the instance count it saw) after the study-complete event is
-- journaled; a later instance sets it back to NULL, and the study completes again.
CREATE TABLE dicom_studies (
    study_uid         TEXT PRIMARY KEY NOT NULL,
    facility          TEXT NOT NULL,
    pipeline          TEXT NOT NULL,
    patient_id        TEXT,
    patient           TEXT,
    accession         TEXT,
    study_date        TEXT,
    study_time        TEXT,
    study_id          TEXT,
    description       TEXT,
    modalities        TEXT NOT NULL DEFAULT '',
    series_count      INTEGER NOT NULL DEFAULT 0,
    instance_count    INTEGER NOT NULL DEFAULT 0,
    bytes             INTEGER NOT NULL DEFAULT 0,
    charset           TEXT NOT NULL DEFAULT '',
    charset_flags     TEXT NOT NULL DEFAULT '',
    first_received_at INTEGER NOT NULL,
    last_received_at  INTEGER NOT NULL,
    completed_at      INTEGER,
    completed_count   INTEGER
);
CREATE INDEX dicom_studies_patient ON dicom_studies (facility, patient_id);
CREATE INDEX dicom_studies_accession ON dicom_studies (accession);
CREATE INDEX dicom_studies_date ON dicom_studies (study_date);
CREATE INDEX dicom_studies_open ON dicom_studies (pipeline, completed_at, last_received_at);

CREATE TABLE dicom_series (
    series_uid     TEXT PRIMARY KEY NOT NULL,
    study_uid      TEXT NOT NULL,
    modality       TEXT,
    series_number  INTEGER,
    description    TEXT,
    instance_count INTEGER NOT NULL DEFAULT 0,
    bytes          INTEGER NOT NULL DEFAULT 0,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX dicom_series_study ON dicom_series (study_uid);

-- One row per SOP instance: where its file is, what it is and how it came. A resent instance
-- replaces its row (and its file); the counts above follow.
CREATE TABLE dicom_instances (
    sop_instance_uid TEXT PRIMARY KEY NOT NULL,
    series_uid       TEXT NOT NULL,
    study_uid        TEXT NOT NULL,
    sop_class_uid    TEXT NOT NULL,
    transfer_syntax  TEXT NOT NULL,
    instance_number  INTEGER,
    bytes            INTEGER NOT NULL,
    sha256           TEXT NOT NULL,
    path             TEXT NOT NULL,
    calling_ae       TEXT NOT NULL,
    received_at      INTEGER NOT NULL
);
CREATE INDEX dicom_instances_series ON dicom_instances (series_uid);
CREATE INDEX dicom_instances_study ON dicom_instances (study_uid);
