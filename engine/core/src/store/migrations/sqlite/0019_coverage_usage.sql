-- The patient's year-to-date coverage usage (issue 19; sqlite): what insurance paid and what
-- of the deductible the patient met, per patient and insurance year, so a coverage policy sees
-- the annual limit and the deductible left. One entry per settlement and kind, written in the
-- same transaction as the saga change that makes it due (huizhen_domain::billing::usage): a
-- settlement adds (`settled`), its refund takes the same back (`refunded`); the year's usage
-- is the sum. Append-only.
CREATE TABLE coverage_usage (
    settlement_id  TEXT NOT NULL,
    kind           TEXT NOT NULL,
    patient        TEXT NOT NULL,
    insurance_year INTEGER NOT NULL,
    covered_fen    INTEGER NOT NULL,
    deductible_fen INTEGER NOT NULL,
    recorded_at    INTEGER NOT NULL,
    PRIMARY KEY (settlement_id, kind)
);
CREATE INDEX coverage_usage_patient ON coverage_usage (patient, insurance_year);
CREATE TRIGGER coverage_usage_no_update BEFORE UPDATE ON coverage_usage
BEGIN SELECT RAISE(ABORT, 'coverage_usage is append-only'); END;
CREATE TRIGGER coverage_usage_no_delete BEFORE DELETE ON coverage_usage
BEGIN SELECT RAISE(ABORT, 'coverage_usage is append-only'); END;
