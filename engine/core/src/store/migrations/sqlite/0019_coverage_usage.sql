-- Billing, continued (issue 19; sqlite). The patient's year-to-date coverage usage: what insurance paid and what
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

-- Key rotation for billing (`huizhen keys rotate` re-seals settlements, their calls and
-- e-invoices with the active data key). Invoices are never changed (CN-70); their update
-- trigger now lets exactly one kind of UPDATE through: one that changes nothing but the sealed
-- `body`, to another sealed value (`hze:…`). Every other UPDATE, and every DELETE, is still
-- refused, as migration 0013 does for the workflow's event logs.
DROP TRIGGER invoices_no_update;
CREATE TRIGGER invoices_no_update BEFORE UPDATE ON invoices
WHEN NEW.id IS NOT OLD.id
  OR NEW.settlement_id IS NOT OLD.settlement_id
  OR NEW.kind IS NOT OLD.kind
  OR NEW.original_id IS NOT OLD.original_id
  OR NEW.bill_code IS NOT OLD.bill_code
  OR NEW.bill_number IS NOT OLD.bill_number
  OR NEW.check_code IS NOT OLD.check_code
  OR NEW.amount_fen IS NOT OLD.amount_fen
  OR NEW.issued_at IS NOT OLD.issued_at
  OR substr(NEW.body, 1, 4) <> 'hze:'
BEGIN SELECT RAISE(ABORT, 'invoices are never changed (CN-70; key rotation may only re-seal `body`)'); END;
