-- The patient's year-to-date coverage usage (issue 19; postgres): what insurance paid and what
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
    covered_fen    BIGINT NOT NULL,
    deductible_fen BIGINT NOT NULL,
    recorded_at    BIGINT NOT NULL,
    PRIMARY KEY (settlement_id, kind)
);
CREATE INDEX coverage_usage_patient ON coverage_usage (patient, insurance_year);
CREATE FUNCTION coverage_usage_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'coverage_usage is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER coverage_usage_no_change BEFORE UPDATE OR DELETE ON coverage_usage
FOR EACH ROW EXECUTE FUNCTION coverage_usage_append_only();

-- Key rotation for billing (`huizhen keys rotate` re-seals settlements, their calls and
-- e-invoices with the active data key). Invoices are never changed (CN-70); the trigger
-- function now lets exactly one kind of UPDATE through: one that changes nothing but the sealed
-- `body`, to another sealed value (`hze:…`). Every other UPDATE, and every DELETE, is still
-- refused, as migration 0013 does for the workflow's event logs.
CREATE OR REPLACE FUNCTION invoices_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND (NEW.id, NEW.settlement_id, NEW.kind, NEW.original_id, NEW.bill_code,
            NEW.bill_number, NEW.check_code, NEW.amount_fen, NEW.issued_at)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.settlement_id, OLD.kind, OLD.original_id, OLD.bill_code,
            OLD.bill_number, OLD.check_code, OLD.amount_fen, OLD.issued_at)
       AND left(NEW.body, 4) = 'hze:' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'invoices are never changed or deleted (CN-70; key rotation may only re-seal `body`)';
END;
$$ LANGUAGE plpgsql;
