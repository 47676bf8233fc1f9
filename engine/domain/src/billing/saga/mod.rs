//! The settlement saga (STANDARDS CN-60, CN-62): the exchange with the national insurance
//! platform that turns a bill into a settlement, as a pure state machine the engine persists
//! before every external call.
//!
//! ```text
//! [ec.query: a 医保电子凭证 QR code decoded, CN-60] → 1101 person → 2201 register
//!      → 2203 visit → 2204 fee details → 2206 pre-settle
//!      → patient confirms → 2207 settle → settled
//! uncertain outcome (timeout, lost answer, restart with a call in flight)
//!      → 2601 reversal with omsgid + oinfno of that call, then the step again with a new msgid
//!        (never a blind retry: the step is sent again only after its reversal succeeded)
//! definite refusal before settlement → abort: 2205 fee revoke, 2202 registration revoke
//! cancellation after settlement (a refund) → 2208 settlement revoke, 2205, 2202 → cancelled
//! ```
//!
//! The engine drives it: [`Settlement::next`] says what to do ([`Next`]); before sending it
//! calls [`Settlement::begin`] with a fresh msgid and persists the saga; after the answer it
//! calls [`Settlement::complete`] with the [`Outcome`] and persists again. A saga loaded with a
//! call in flight ([`Next::AwaitOutcome`]) after a restart has an uncertain outcome: the engine
//! completes it as [`Outcome::Uncertain`], which leads to its reversal. Read-only transactions
//! (1101, 2206 pre-settlement) are simply asked again after an uncertain outcome. A reversal is
//! never itself reversed ([`SagaError::ReversalOfReversal`]); a refused reversal, or one that
//! stays uncertain, stops the saga for a person ([`Phase::Attention`]) and the daily
//! reconciliation. Self-pay patients skip the platform: they confirm and the bill is settled.

mod apply;
mod types;

#[cfg(test)]
pub(crate) mod tests;

pub use types::*;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::coverage::CoverageResult;
use super::fee::FeeBill;
use super::money::Fen;
use super::msgid::MsgId;

/// A successful reversal of the same step this many times aborts the saga.
pub const MAX_REVERSALS: u32 = 3;
/// A reversal that stays uncertain this many times needs a person.
pub const MAX_REVERSAL_ATTEMPTS: u32 = 5;
/// A read-only transaction that stays uncertain this many times aborts the saga.
pub const MAX_QUERY_RETRIES: u32 = 3;

/// One settlement: its bill, what the platform answered, every call, and where it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// The settlement id.
    pub id: String,
    /// One more per change; the store writes only against the version it read.
    pub version: u64,
    /// The billing facility (定点医药机构编号 for NHSA).
    pub facility: String,
    /// Insured through the platform, or self-pay.
    pub kind: Kind,
    /// The priced consultation.
    pub bill: FeeBill,
    /// The local coverage estimate (the `coverage` policy); the platform's pre-settlement
    /// decides for insured patients.
    pub estimate: CoverageResult,
    /// What 1101 answered.
    #[serde(default)]
    pub person: Option<Person>,
    /// The visit id 2201 answered (mdtrt_id).
    #[serde(default)]
    pub mdtrt_id: Option<String>,
    /// What 2206 answered.
    #[serde(default)]
    pub pre_settlement: Option<Amounts>,
    /// The patient's confirmation of the pre-settlement.
    #[serde(default)]
    pub confirmation: Option<Confirmation>,
    /// The settlement (2207's answer, or the self-pay settlement).
    #[serde(default)]
    pub settled: Option<Settled>,
    /// Where it is going.
    pub goal: Goal,
    /// Calls with a definite success that are in effect (not reversed), in order.
    #[serde(default)]
    pub done: Vec<CallRef>,
    /// The call sent (or about to be) whose outcome is not recorded yet.
    #[serde(default)]
    pub in_flight: Option<CallRef>,
    /// A call whose outcome is uncertain, waiting for its 2601.
    #[serde(default)]
    pub to_reverse: Option<CallRef>,
    /// Every call ever made, in order, with its outcome.
    #[serde(default)]
    pub calls: Vec<CallRecord>,
    /// Successful reversals of each forward step (by transaction code).
    #[serde(default)]
    pub reversals: std::collections::BTreeMap<String, u32>,
    /// Attempts at the current reversal that stayed uncertain.
    #[serde(default)]
    pub reversal_attempts: u32,
    /// Uncertain answers to the current read-only step.
    #[serde(default)]
    pub query_retries: u32,
    /// Why a person must look at it (set: [`Phase::Attention`]).
    #[serde(default)]
    pub attention: Option<String>,
    /// When it was opened.
    pub opened_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// What the engine does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Send this transaction (for 2601: reversing `target`). Call [`Settlement::begin`] with a
    /// fresh msgid, persist, then send.
    Send {
        /// The transaction.
        txn: Txn,
        /// For 2601: the call it reverses.
        target: Option<CallRef>,
    },
    /// A call is in flight without a recorded outcome.
    AwaitOutcome(CallRef),
    /// The pre-settlement waits for the patient's confirmation ([`Settlement::confirm`]).
    WaitForPatient,
    /// Nothing more to do in this phase.
    Finished(Phase),
}

impl Settlement {
    /// A new saga (version 1) for a bill.
    pub fn open(
        id: &str,
        facility: &str,
        kind: Kind,
        bill: FeeBill,
        estimate: CoverageResult,
        now: DateTime<Utc>,
    ) -> Settlement {
        Settlement {
            id: id.to_owned(),
            version: 1,
            facility: facility.to_owned(),
            kind,
            bill,
            estimate,
            person: None,
            mdtrt_id: None,
            pre_settlement: None,
            confirmation: None,
            settled: None,
            goal: Goal::Settle,
            done: Vec::new(),
            in_flight: None,
            to_reverse: None,
            calls: Vec::new(),
            reversals: Default::default(),
            reversal_attempts: 0,
            query_retries: 0,
            attention: None,
            opened_at: now,
            updated_at: now,
        }
    }

    /// True when a definite success of `txn` is in effect.
    pub fn is_done(&self, txn: Txn) -> bool {
        self.done.iter().any(|c| c.txn == txn)
    }

    /// The forward steps of this kind of settlement.
    pub fn forward(&self) -> &'static [Txn] {
        match &self.kind {
            Kind::Insured { voucher }
                if voucher.qr.is_some() || self.is_done(Txn::VoucherDecode) =>
            {
                &Txn::FORWARD_QR
            }
            Kind::Insured { .. } => &Txn::FORWARD,
            Kind::SelfPay => &[],
        }
    }

    /// The compensation still due: 2205 for fee details in effect, then 2202 for a
    /// registration in effect.
    fn compensation(&self) -> Option<Txn> {
        if self.is_done(Txn::FeeUpload) && !self.is_done(Txn::FeeRevoke) {
            Some(Txn::FeeRevoke)
        } else if self.is_done(Txn::Register) && !self.is_done(Txn::RegisterRevoke) {
            Some(Txn::RegisterRevoke)
        } else {
            None
        }
    }

    /// What to do next.
    pub fn next(&self) -> Next {
        if self.attention.is_some() {
            return Next::Finished(Phase::Attention);
        }
        if let Some(c) = &self.in_flight {
            return Next::AwaitOutcome(c.clone());
        }
        if let Some(target) = &self.to_reverse {
            return Next::Send {
                txn: Txn::Reversal,
                target: Some(target.clone()),
            };
        }
        let send = |txn| Next::Send { txn, target: None };
        match &self.goal {
            Goal::Settle => {
                for &txn in self.forward() {
                    if !self.is_done(txn) {
                        if txn == Txn::Settle && self.confirmation.is_none() {
                            return Next::WaitForPatient;
                        }
                        return send(txn);
                    }
                }
                if self.settled.is_none() {
                    // Self-pay: settled by the confirmation.
                    return Next::WaitForPatient;
                }
                Next::Finished(Phase::Settled)
            }
            Goal::Abort { .. } => match self.compensation() {
                Some(txn) => send(txn),
                None => Next::Finished(Phase::Aborted),
            },
            Goal::Cancel { .. } => {
                if matches!(self.kind, Kind::Insured { .. }) && !self.is_done(Txn::SettleRevoke) {
                    return send(Txn::SettleRevoke);
                }
                match self.compensation() {
                    Some(txn) => send(txn),
                    None => Next::Finished(Phase::Cancelled),
                }
            }
        }
    }

    /// Where it stands, for lists and metrics (X-04).
    pub fn phase(&self) -> Phase {
        match self.next() {
            Next::Finished(p) => p,
            Next::WaitForPatient => Phase::AwaitingConfirmation,
            Next::Send {
                txn: Txn::Reversal, ..
            } => Phase::Reversing,
            Next::AwaitOutcome(c) if c.txn == Txn::Reversal => Phase::Reversing,
            _ => match self.goal {
                Goal::Settle => Phase::InProgress,
                Goal::Abort { .. } => Phase::Aborting,
                Goal::Cancel { .. } => Phase::Cancelling,
            },
        }
    }

    /// What the patient pays in the end: the settlement's cash and account parts (0 before
    /// settlement or after a cancellation).
    pub fn patient_pays(&self) -> Fen {
        match (&self.settled, self.phase()) {
            (Some(s), Phase::Settled) => s.amounts.patient(),
            _ => Fen::ZERO,
        }
    }

    /// The record of a call.
    pub fn call(&self, msgid: &MsgId) -> Option<&CallRecord> {
        self.calls.iter().find(|c| &c.call.msgid == msgid)
    }
}
