//! Billing and insurance settlement (issue 19; STANDARDS §4.10: CN-60 … CN-63, CN-51, CN-70),
//! pure: no I/O, no clock read, no floating point.
//!
//! * [`money`]: [`Fen`] (integer fen, checked arithmetic) and [`Rate`] (basis points).
//! * [`schedule`]: the facility's fee schedule (YAML, errors with file:line:column), national
//!   医疗服务项目 codes kept exactly as issued beside the local and province codes and the
//!   mapping version.
//! * [`fee`]: what a completed consultation bills ([`Billable`]) and its priced lines.
//! * [`coverage`]: the [`CoveragePolicy`] port (the `coverage` plugin implements it) and the
//!   built-in [`SimplePolicy`]; every answer is checked to add up.
//! * [`msgid`]: the 30-character NHSA message id and its persisted cursor (CN-61).
//! * [`outbound`]: what a settled (or cancelled) settlement announces to the HIS, the body of
//!   the `DFT^P03` `hl7_build` makes.
//! * [`saga`]: the settlement saga's state machine (CN-62): persisted before every call,
//!   reversal (2601) on an uncertain outcome, never a blind retry.
//! * [`split`]: CN-63's three records: province price items, payer split, inter-institution
//!   ledger.
//! * [`reconcile`]: the day's settlements against the platform's statement (3201/3202).
//! * [`usage`]: the patient's year-to-date coverage usage (covered, deductible met) that a
//!   settlement adds to and its refund takes back.

pub mod coverage;
pub mod fee;
pub mod money;
pub mod msgid;
pub mod outbound;
pub mod reconcile;
pub mod saga;
pub mod schedule;
pub mod split;
pub mod usage;

pub use coverage::{
    CoverageError, CoverageItem, CoverageLine, CoveragePolicy, CoverageResult, Eligibility,
    PatientCoverage, Reason, SimplePolicy, YearToDate,
};
pub use fee::{Billable, FeeBill, FeeError, FeeLine, compute_fees, session_minutes};
pub use money::{Fen, MoneyError, Rate};
pub use msgid::{MsgId, MsgIdCursor, MsgIdError, next_msgid};
pub use saga::{
    Amounts, CallRecord, CallRef, Goal, Kind, Next, Outcome, Person, Phase, Reply, SagaError,
    Settlement, Txn, Voucher,
};
pub use schedule::{FeeSchedule, ItemCodes, ScheduleErrors, ScheduleProblem, ServiceFee};
pub use split::{LedgerEntry, LedgerKind, PayerSplit, PriceItem, RevenueShare, Split, split};
pub use usage::{UsageEntry, UsageKind, insurance_year, usage_change, year_to_date};
