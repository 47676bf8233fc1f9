//! The saga's vocabulary: transaction codes, what a call is and how it ended, what the
//! platform answers, the phases and the refusals.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::billing::coverage::PatientCoverage;
use crate::billing::money::{Fen, MoneyError};
use crate::billing::msgid::MsgId;

/// The NHSA transactions the saga uses (CN-62), serialised as their 4-character `infno`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Txn {
    /// 医保电子凭证 decoding through the provincial interface (`ec.query`, CN-60): the QR
    /// code the patient shows → the certificate the platform's calls carry.
    #[serde(rename = "ec.query")]
    VoucherDecode,
    /// 1101 人员信息获取.
    #[serde(rename = "1101")]
    PersonInfo,
    /// 2201 挂号.
    #[serde(rename = "2201")]
    Register,
    /// 2202 挂号撤销.
    #[serde(rename = "2202")]
    RegisterRevoke,
    /// 2203 就诊信息上传.
    #[serde(rename = "2203")]
    VisitUpload,
    /// 2204 费用明细上传.
    #[serde(rename = "2204")]
    FeeUpload,
    /// 2205 费用明细撤销.
    #[serde(rename = "2205")]
    FeeRevoke,
    /// 2206 预结算.
    #[serde(rename = "2206")]
    PreSettle,
    /// 2207 结算.
    #[serde(rename = "2207")]
    Settle,
    /// 2208 结算撤销.
    #[serde(rename = "2208")]
    SettleRevoke,
    /// 2601 冲正交易.
    #[serde(rename = "2601")]
    Reversal,
}

impl Txn {
    /// The forward steps of an insured settlement, in order.
    pub const FORWARD: [Txn; 6] = [
        Txn::PersonInfo,
        Txn::Register,
        Txn::VisitUpload,
        Txn::FeeUpload,
        Txn::PreSettle,
        Txn::Settle,
    ];

    /// The forward steps of an insured settlement that starts from a 医保电子凭证 QR code.
    pub const FORWARD_QR: [Txn; 7] = [
        Txn::VoucherDecode,
        Txn::PersonInfo,
        Txn::Register,
        Txn::VisitUpload,
        Txn::FeeUpload,
        Txn::PreSettle,
        Txn::Settle,
    ];

    /// Every transaction.
    pub const ALL: [Txn; 11] = [
        Txn::VoucherDecode,
        Txn::PersonInfo,
        Txn::Register,
        Txn::RegisterRevoke,
        Txn::VisitUpload,
        Txn::FeeUpload,
        Txn::FeeRevoke,
        Txn::PreSettle,
        Txn::Settle,
        Txn::SettleRevoke,
        Txn::Reversal,
    ];

    /// The `infno`.
    pub fn code(self) -> &'static str {
        match self {
            Txn::VoucherDecode => "ec.query",
            Txn::PersonInfo => "1101",
            Txn::Register => "2201",
            Txn::RegisterRevoke => "2202",
            Txn::VisitUpload => "2203",
            Txn::FeeUpload => "2204",
            Txn::FeeRevoke => "2205",
            Txn::PreSettle => "2206",
            Txn::Settle => "2207",
            Txn::SettleRevoke => "2208",
            Txn::Reversal => "2601",
        }
    }

    /// The transaction of an `infno`.
    pub fn from_code(code: &str) -> Option<Txn> {
        Txn::ALL.into_iter().find(|t| t.code() == code)
    }

    /// False for queries and trial calculations (ec.query, 1101, 2206), which change nothing at
    /// the platform and may be asked again after an uncertain outcome.
    pub fn has_effect(self) -> bool {
        !matches!(self, Txn::VoucherDecode | Txn::PersonInfo | Txn::PreSettle)
    }
}

impl fmt::Display for Txn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// How the person is identified to the platform (CN-60). A 医保电子凭证 QR code is decoded
/// through the provincial interface first; only the certificate type and number it returns are
/// kept, never the QR token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Voucher {
    /// `mdtrt_cert_type`: `01` 医保电子凭证, `02` 居民身份证, `03` 社会保障卡 (blank until a QR
    /// code is decoded).
    #[serde(default)]
    pub cert_type: String,
    /// `mdtrt_cert_no` / `certno` (blank until a QR code is decoded).
    #[serde(default)]
    pub cert_no: String,
    /// The insured region (参保地, `insuplc_admdvs`) when already known.
    #[serde(default)]
    pub insuplc_admdvs: Option<String>,
    /// The 医保电子凭证 QR code the patient showed, until the provincial interface has decoded
    /// it (`ec.query`, the saga's first step); then gone, replaced by the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr: Option<String>,
}

/// Insured through the platform, or self-pay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Kind {
    /// Through the platform.
    Insured {
        /// The person's voucher.
        voucher: Voucher,
    },
    /// No insurance: the patient pays all.
    SelfPay,
}

/// What 1101 answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// `psn_no`, the platform's person number.
    pub psn_no: String,
    /// `insuplc_admdvs`, the insured region.
    pub insuplc_admdvs: String,
    /// The coverage it implies.
    pub coverage: PatientCoverage,
}

/// Amounts of a (pre-)settlement: the total, what the fund pays, what the personal account
/// pays and what the patient pays in cash. `fund + account + cash = total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amounts {
    /// `medfee_sumamt`.
    pub total: Fen,
    /// `fund_pay_sumamt`.
    pub fund: Fen,
    /// `acct_pay`.
    pub account: Fen,
    /// `psn_cash_pay`.
    pub cash: Fen,
}

impl Amounts {
    /// The patient's part (account and cash).
    pub fn patient(&self) -> Fen {
        self.account.add(self.cash).unwrap_or(self.total)
    }

    /// Refuses amounts that do not add up or are negative.
    pub fn check(&self) -> Result<(), String> {
        for (what, v) in [
            ("total", self.total),
            ("fund", self.fund),
            ("account", self.account),
            ("cash", self.cash),
        ] {
            if v.0 < 0 {
                return Err(format!("{what} is negative ({v})"));
            }
        }
        let sum = Fen::sum([self.fund, self.account, self.cash])
            .map_err(|e: MoneyError| e.to_string())?;
        if sum != self.total {
            return Err(format!(
                "fund {} + account {} + cash {} is not the total {}",
                self.fund, self.account, self.cash, self.total
            ));
        }
        Ok(())
    }
}

/// The patient's confirmation of the pre-settlement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// Who confirmed (the patient, or staff at the counter on their behalf).
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The amounts confirmed.
    pub amounts: Amounts,
}

/// The settlement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    /// `setl_id` (none for self-pay).
    #[serde(default)]
    pub setl_id: Option<String>,
    /// The amounts.
    pub amounts: Amounts,
    /// When.
    pub at: DateTime<Utc>,
}

/// Where the saga is going.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "goal", rename_all = "kebab-case")]
pub enum Goal {
    /// To a settlement.
    Settle,
    /// Back out before settlement (compensate what is in effect).
    Abort {
        /// Why.
        reason: String,
    },
    /// Cancel a settlement (2208) and refund.
    Cancel {
        /// Why.
        reason: String,
    },
}

/// A call: its transaction, its msgid and, for 2601, the call it reverses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRef {
    /// The transaction.
    pub txn: Txn,
    /// Its msgid.
    pub msgid: MsgId,
    /// For 2601: the reversed call's msgid (`omsgid`) and transaction (`oinfno`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverses: Option<Box<CallRef>>,
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// The platform answered success (`infcode` 0) with this output.
    Ok {
        /// The output.
        reply: Reply,
    },
    /// The platform answered a definite failure.
    Refused {
        /// `infcode` or the platform's error code.
        code: String,
        /// `err_msg`.
        message: String,
    },
    /// The request certainly never reached the platform (the connection was refused before
    /// anything was sent). The step is asked again later under a new msgid.
    NotSent {
        /// Why.
        why: String,
    },
    /// No answer that can be trusted: a timeout, a lost connection, an answer that does not
    /// parse, or a restart with the call in flight.
    Uncertain {
        /// Why.
        why: String,
    },
}

/// What a successful call answered that the saga keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    /// `ec.query`: the certificate the QR code stands for (without the QR code).
    Voucher(Voucher),
    /// 1101.
    Person(Person),
    /// 2201: the visit id.
    Registered {
        /// `mdtrt_id`.
        mdtrt_id: String,
    },
    /// 2206.
    PreSettled(Amounts),
    /// 2207.
    Settled {
        /// `setl_id`.
        setl_id: String,
        /// The amounts.
        amounts: Amounts,
    },
    /// Any other success.
    Accepted,
}

/// One call with its outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The call.
    pub call: CallRef,
    /// When it was begun (persisted before sending).
    pub sent_at: DateTime<Utc>,
    /// How it ended; none while in flight.
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// When the outcome was recorded.
    #[serde(default)]
    pub outcome_at: Option<DateTime<Utc>>,
}

/// Where a saga stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// On its way to a settlement.
    InProgress,
    /// The pre-settlement waits for the patient.
    AwaitingConfirmation,
    /// A 2601 is due or in flight.
    Reversing,
    /// Settled.
    Settled,
    /// Compensating before an abort.
    Aborting,
    /// Backed out before settlement; nothing in effect at the platform.
    Aborted,
    /// Cancelling a settlement.
    Cancelling,
    /// Cancelled and refunded.
    Cancelled,
    /// Stopped for a person (a refused or uncertain reversal, amounts that do not match).
    Attention,
}

impl Phase {
    /// The code, as stored and listed.
    pub fn code(self) -> &'static str {
        match self {
            Phase::InProgress => "in-progress",
            Phase::AwaitingConfirmation => "awaiting-confirmation",
            Phase::Reversing => "reversing",
            Phase::Settled => "settled",
            Phase::Aborting => "aborting",
            Phase::Aborted => "aborted",
            Phase::Cancelling => "cancelling",
            Phase::Cancelled => "cancelled",
            Phase::Attention => "attention",
        }
    }

    /// The phase of a code.
    pub fn code_parse(code: &str) -> Option<Phase> {
        [
            Phase::InProgress,
            Phase::AwaitingConfirmation,
            Phase::Reversing,
            Phase::Settled,
            Phase::Aborting,
            Phase::Aborted,
            Phase::Cancelling,
            Phase::Cancelled,
            Phase::Attention,
        ]
        .into_iter()
        .find(|p| p.code() == code)
    }

    /// True when the saga has nothing more to send by itself (settled can still be cancelled).
    pub fn is_at_rest(self) -> bool {
        matches!(
            self,
            Phase::AwaitingConfirmation
                | Phase::Settled
                | Phase::Aborted
                | Phase::Cancelled
                | Phase::Attention
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A command the saga refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SagaError {
    /// `begin` when the saga is not ready to send (it waits, or a call is in flight).
    #[error("settlement {id} has nothing to send now ({phase})")]
    NothingToSend {
        /// The settlement.
        id: String,
        /// Its phase.
        phase: Phase,
    },
    /// `complete` for a msgid that is not the call in flight.
    #[error("settlement {id}: {msgid} is not the call in flight")]
    NotInFlight {
        /// The settlement.
        id: String,
        /// The msgid given.
        msgid: String,
    },
    /// A msgid used before.
    #[error("settlement {id}: msgid {msgid} was used before")]
    MsgIdReused {
        /// The settlement.
        id: String,
        /// The msgid.
        msgid: String,
    },
    /// A 2601 of a 2601.
    #[error("a reversal ({msgid}) is never reversed")]
    ReversalOfReversal {
        /// The reversal's msgid.
        msgid: String,
    },
    /// A call the saga does not know.
    #[error("settlement {id} has no call {msgid}")]
    UnknownCall {
        /// The settlement.
        id: String,
        /// The msgid.
        msgid: String,
    },
    /// A confirmation when none is awaited.
    #[error("settlement {id} awaits no confirmation ({phase})")]
    NotAwaitingConfirmation {
        /// The settlement.
        id: String,
        /// Its phase.
        phase: Phase,
    },
    /// The patient confirmed other amounts than the pre-settlement's.
    #[error("the confirmed amounts are not the pre-settlement's ({expected:?})")]
    AmountsDiffer {
        /// What the pre-settlement says.
        expected: Box<Amounts>,
    },
    /// A cancellation while a call is in flight or a reversal is due.
    #[error("settlement {id} is busy ({phase}); cancel after the call in flight has ended")]
    Busy {
        /// The settlement.
        id: String,
        /// Its phase.
        phase: Phase,
    },
    /// A cancellation of what is already backed out or being backed out.
    #[error("settlement {id} is {phase}: nothing to cancel")]
    NothingToCancel {
        /// The settlement.
        id: String,
        /// Its phase.
        phase: Phase,
    },
}
