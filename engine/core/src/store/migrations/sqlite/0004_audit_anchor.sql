-- The audit chain's anchor (issue 12 item 3) and the subject facility of audit events.
-- `mac`: KID:HMAC-SHA256 of the row's hash with the audit key, a file outside the database;
-- empty for rows written before the key existed. `subject_facility`: the facility of the
-- resource (a message's), so auditors of that facility see events about its patients.
ALTER TABLE audit_events ADD COLUMN subject_facility TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN mac TEXT NOT NULL DEFAULT '';
CREATE INDEX audit_events_facility ON audit_events (facility, seq);
CREATE INDEX audit_events_subject_facility ON audit_events (subject_facility, seq);
