-- Billing and insurance settlement (issue 19; STANDARDS CN-60 … CN-63, CN-70; postgres). The
-- rules live in huizhen_domain::billing; these tables keep the settlement sagas, every request
-- to the insurance platform, the msgid sequence, e-invoices and the inter-institution ledger.

-- One row per settlement saga. `body` is the domain's Settlement JSON (sealed when encryption
-- is on: it carries the person's certificate number), written only against the version it was
-- decided on (`UPDATE … WHERE version = <expected>`), and always BEFORE the external call it
-- begins. `attempt` numbers the sagas of one consultation: a new one only after the last was
-- aborted. The settled amounts are columns for the daily reconciliation. A runner drives a
-- saga only while it holds its lease.
CREATE TABLE settlements (
    id              TEXT PRIMARY KEY NOT NULL,
    consultation_id TEXT NOT NULL,
    attempt         BIGINT NOT NULL,
    facility        TEXT NOT NULL,
    phase           TEXT NOT NULL,
    version         BIGINT NOT NULL,
    total_fen       BIGINT NOT NULL,
    setl_id         TEXT,
    fund_fen        BIGINT,
    account_fen     BIGINT,
    cash_fen        BIGINT,
    settled_at      BIGINT,
    body            TEXT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (consultation_id, attempt)
);
CREATE INDEX settlements_phase ON settlements (phase, updated_at);
CREATE INDEX settlements_settled ON settlements (settled_at);

-- Every request to the insurance platform, keyed by its msgid (CN-61: the idempotency key),
-- inserted with the request as sent in the transaction that persists the saga before the call,
-- and completed with the answer (or `uncertain`) after it. A 2601 names the call it reverses.
-- Request and response are sealed when encryption is on.
CREATE TABLE settlement_calls (
    msgid         TEXT PRIMARY KEY NOT NULL,
    settlement_id TEXT NOT NULL,
    infno         TEXT NOT NULL,
    omsgid        TEXT,
    oinfno        TEXT,
    request       TEXT NOT NULL,
    response      TEXT,
    outcome       TEXT,
    sent_at       BIGINT NOT NULL,
    answered_at   BIGINT
);
CREATE INDEX settlement_calls_settlement ON settlement_calls (settlement_id, sent_at);

-- The last msgid handed out per institution (CN-61: the sequence survives restarts).
CREATE TABLE msgid_cursors (
    institution TEXT PRIMARY KEY NOT NULL,
    second      BIGINT NOT NULL,
    seq         BIGINT NOT NULL
);

-- E-invoices (CN-70) as the finance platform issued them: 票据代码, 票据号码, 校验码, linked to
-- the settlement; a refund's 冲红 is a row of its own linked to the original. One invoice and
-- at most one 冲红 per settlement. Never changed, never deleted.
CREATE TABLE invoices (
    id            TEXT PRIMARY KEY NOT NULL,
    settlement_id TEXT NOT NULL,
    kind          TEXT NOT NULL,
    original_id   TEXT,
    bill_code     TEXT NOT NULL,
    bill_number   TEXT NOT NULL,
    check_code    TEXT NOT NULL,
    amount_fen    BIGINT NOT NULL,
    issued_at     BIGINT NOT NULL,
    body          TEXT NOT NULL,
    UNIQUE (settlement_id, kind),
    UNIQUE (bill_code, bill_number)
);
CREATE FUNCTION invoices_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'invoices are never changed or deleted (CN-70)';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER invoices_no_change BEFORE UPDATE OR DELETE ON invoices
FOR EACH ROW EXECUTE FUNCTION invoices_append_only();

-- The inter-institution ledger (CN-63): the invited side's share of a settled fee under the
-- cooperation agreement, and its reversal when the settlement is cancelled. Outside 医保,
-- apart from the price items and the payer split. Append-only.
CREATE TABLE billing_ledger (
    settlement_id TEXT NOT NULL,
    kind          TEXT NOT NULL,
    agreement     TEXT NOT NULL,
    payer         TEXT NOT NULL,
    payee         TEXT NOT NULL,
    amount_fen    BIGINT NOT NULL,
    recorded_at   BIGINT NOT NULL,
    PRIMARY KEY (settlement_id, kind)
);
CREATE FUNCTION billing_ledger_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'billing_ledger is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER billing_ledger_no_change BEFORE UPDATE OR DELETE ON billing_ledger
FOR EACH ROW EXECUTE FUNCTION billing_ledger_append_only();

-- The daily reconciliation's report per local day (`yyyy-mm-dd`): the local settlements of the
-- day against the platform's statement (3201/3202), as JSON. A run again replaces it.
CREATE TABLE reconciliation_reports (
    day         TEXT PRIMARY KEY NOT NULL,
    statement   TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
