-- The FHIR resource store (issue 16; STANDARDS FHIR-01, FHIR-20, FHIR-21; sqlite): resources
-- written by the `fhir_store` sink (a transaction Bundle per message, FHIR-20 conditional
-- semantics) and read by the facade at /fhir/r4. The core knows no FHIR model: the adapter
-- extracts the search terms and dates and passes them with the resource JSON; these tables
-- keep JSON and index rows only.

-- One row per resource: its current version, facility (the writing pipeline's), the Patient
-- it is about (a resource id, for the patient compartment and `patient=`), and when it last
-- changed (ms since the epoch; `meta.lastUpdated`).
CREATE TABLE fhir_resources (
    res_type     TEXT NOT NULL,
    id           TEXT NOT NULL,
    version      INTEGER NOT NULL,
    facility     TEXT NOT NULL,
    patient      TEXT,
    last_updated INTEGER NOT NULL,
    PRIMARY KEY (res_type, id)
);
CREATE INDEX fhir_resources_updated ON fhir_resources (res_type, last_updated, id);
CREATE INDEX fhir_resources_patient ON fhir_resources (patient, res_type);

-- Every version of every resource (`_history/{vid}`), append-only. `body` is the resource
-- JSON, sealed (`hze:…`, bound to the resource and version) when encryption is on; the
-- message that wrote it is kept for tracing. The one UPDATE let through is key rotation's:
-- nothing changes but `body`, to another sealed value (as migration 0013 does for the
-- workflow's event logs).
CREATE TABLE fhir_versions (
    res_type     TEXT NOT NULL,
    id           TEXT NOT NULL,
    version      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    message_id   TEXT NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (res_type, id, version)
);
CREATE TRIGGER fhir_versions_no_update BEFORE UPDATE ON fhir_versions
WHEN NEW.res_type IS NOT OLD.res_type
  OR NEW.id IS NOT OLD.id
  OR NEW.version IS NOT OLD.version
  OR NEW.last_updated IS NOT OLD.last_updated
  OR NEW.message_id IS NOT OLD.message_id
  OR substr(NEW.body, 1, 4) <> 'hze:'
BEGIN SELECT RAISE(ABORT, 'fhir_versions is append-only (key rotation may only re-seal `body`)'); END;
CREATE TRIGGER fhir_versions_no_delete BEFORE DELETE ON fhir_versions
BEGIN SELECT RAISE(ABORT, 'fhir_versions is append-only'); END;

-- Equality search terms of the current version (tokens `system|code`, `code`, references,
-- normalised words): the value is its blind index (`hmac:…`) when encryption is on, since
-- identifiers and names are patient data.
CREATE TABLE fhir_terms (
    res_type TEXT NOT NULL,
    param    TEXT NOT NULL,
    value    TEXT NOT NULL,
    id       TEXT NOT NULL,
    PRIMARY KEY (res_type, param, value, id)
) WITHOUT ROWID;
CREATE INDEX fhir_terms_resource ON fhir_terms (res_type, id);

-- Date search ranges of the current version: [lo, hi) in ms since the epoch, the precision
-- of the value (a day is a day long).
CREATE TABLE fhir_dates (
    res_type TEXT NOT NULL,
    id       TEXT NOT NULL,
    param    TEXT NOT NULL,
    lo       INTEGER NOT NULL,
    hi       INTEGER NOT NULL
);
CREATE INDEX fhir_dates_search ON fhir_dates (res_type, param, lo);
CREATE INDEX fhir_dates_resource ON fhir_dates (res_type, id);

-- What a sink applied for a message: a replay of the message (a retry, a reprocess, a crash
-- between the store and the journal) finds its row and writes nothing again. `outcome` is the
-- transaction-response Bundle (ids, versions, statuses; no patient data).
CREATE TABLE fhir_applied (
    message_id TEXT NOT NULL,
    sink       TEXT NOT NULL,
    at         INTEGER NOT NULL,
    outcome    TEXT NOT NULL,
    PRIMARY KEY (message_id, sink)
);
