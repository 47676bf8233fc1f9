//! The saga's transitions: [`Settlement::begin`] a call, [`Settlement::complete`] it with its
//! outcome, the patient's [`Settlement::confirm`]ation, [`Settlement::cancel`] (abort before
//! settlement, 2208 and refund after it) and an operator's [`Settlement::reverse`]. Each
//! successful transition adds one to the version.

use chrono::{DateTime, Utc};

use super::{
    Amounts, CallRecord, CallRef, Goal, Kind, MAX_QUERY_RETRIES, MAX_REVERSAL_ATTEMPTS,
    MAX_REVERSALS, Next, Outcome, Phase, Reply, SagaError, Settled, Settlement, Txn,
};
use crate::billing::msgid::MsgId;

impl Settlement {
    fn touch(&mut self, now: DateTime<Utc>) {
        self.version += 1;
        self.updated_at = now;
    }

    /// Marks the next call as in flight under `msgid` (a fresh id from the generator). Persist
    /// the saga after this and before sending.
    pub fn begin(&mut self, msgid: MsgId, now: DateTime<Utc>) -> Result<CallRef, SagaError> {
        let Next::Send { txn, target } = self.next() else {
            return Err(SagaError::NothingToSend {
                id: self.id.clone(),
                phase: self.phase(),
            });
        };
        if self.call(&msgid).is_some()
            || self
                .calls
                .iter()
                .any(|c| c.call.reverses.as_ref().is_some_and(|r| r.msgid == msgid))
        {
            return Err(SagaError::MsgIdReused {
                id: self.id.clone(),
                msgid: msgid.to_string(),
            });
        }
        if let Some(t) = &target
            && t.txn == Txn::Reversal
        {
            return Err(SagaError::ReversalOfReversal {
                msgid: t.msgid.to_string(),
            });
        }
        let call = CallRef {
            txn,
            msgid,
            reverses: target.map(Box::new),
        };
        self.calls.push(CallRecord {
            call: call.clone(),
            sent_at: now,
            outcome: None,
            outcome_at: None,
        });
        self.in_flight = Some(call.clone());
        self.touch(now);
        Ok(call)
    }

    /// Records the outcome of the call in flight and decides what follows.
    pub fn complete(
        &mut self,
        msgid: &MsgId,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<(), SagaError> {
        let call = match &self.in_flight {
            Some(c) if &c.msgid == msgid => c.clone(),
            _ => {
                return Err(SagaError::NotInFlight {
                    id: self.id.clone(),
                    msgid: msgid.to_string(),
                });
            }
        };
        self.in_flight = None;
        if let Some(rec) = self.calls.iter_mut().rev().find(|r| &r.call.msgid == msgid) {
            rec.outcome = Some(outcome.clone());
            rec.outcome_at = Some(now);
        }
        if let Outcome::NotSent { .. } = outcome {
            // Nothing happened at the platform: `next` asks for the same step again (a 2601
            // stays due).
        } else if call.txn == Txn::Reversal {
            self.reversal_outcome(outcome);
        } else {
            match outcome {
                Outcome::Ok { reply } => self.succeeded(call, reply, now),
                Outcome::Refused { code, message } => {
                    let why = format!("{} refused: {code} {message}", call.txn);
                    self.refused(call.txn, why);
                }
                Outcome::NotSent { .. } => {}
                Outcome::Uncertain { why } => {
                    if call.txn.has_effect() {
                        // Never a blind retry: reverse it first (CN-62).
                        self.to_reverse = Some(call);
                    } else {
                        self.query_retries += 1;
                        if self.query_retries >= MAX_QUERY_RETRIES {
                            self.query_retries = 0;
                            self.refused(
                                call.txn,
                                format!(
                                    "{} stayed uncertain {MAX_QUERY_RETRIES} times: {why}",
                                    call.txn
                                ),
                            );
                        }
                    }
                }
            }
        }
        self.touch(now);
        Ok(())
    }

    fn reversal_outcome(&mut self, outcome: Outcome) {
        let Some(target) = self.to_reverse.clone() else {
            return;
        };
        match outcome {
            Outcome::Ok { .. } => {
                self.to_reverse = None;
                self.reversal_attempts = 0;
                let n = self
                    .reversals
                    .entry(target.txn.code().to_owned())
                    .or_default();
                *n += 1;
                if *n >= MAX_REVERSALS {
                    let reason = format!("{} was reversed {MAX_REVERSALS} times", target.txn);
                    if self.goal == Goal::Settle {
                        self.goal = Goal::Abort { reason };
                    } else {
                        self.attention = Some(format!("{reason}; finish by hand"));
                    }
                }
            }
            Outcome::Refused { code, message } => {
                // The call stays unresolved (its record says uncertain); only an operator's
                // `reverse` after reconciliation moves the saga again.
                self.to_reverse = None;
                self.attention = Some(format!(
                    "the reversal of {} {} was refused ({code} {message}); reconcile with the platform",
                    target.txn, target.msgid
                ));
            }
            Outcome::NotSent { .. } => {}
            Outcome::Uncertain { why } => {
                self.reversal_attempts += 1;
                if self.reversal_attempts >= MAX_REVERSAL_ATTEMPTS {
                    self.to_reverse = None;
                    self.attention = Some(format!(
                        "the reversal of {} {} stayed uncertain {MAX_REVERSAL_ATTEMPTS} times ({why}); reconcile with the platform",
                        target.txn, target.msgid
                    ));
                }
            }
        }
    }

    fn succeeded(&mut self, call: CallRef, reply: Reply, now: DateTime<Utc>) {
        self.query_retries = 0;
        let txn = call.txn;
        match (txn, reply) {
            (Txn::VoucherDecode, Reply::Voucher(mut v)) => {
                // Only the certificate is kept, never the QR code.
                v.qr = None;
                self.kind = Kind::Insured { voucher: v };
            }
            (Txn::PersonInfo, Reply::Person(p)) => self.person = Some(p),
            (Txn::Register, Reply::Registered { mdtrt_id }) => self.mdtrt_id = Some(mdtrt_id),
            (Txn::PreSettle, Reply::PreSettled(a)) => {
                if let Err(why) = self.check_amounts(&a) {
                    self.done.push(call);
                    self.refused(txn, format!("2206 answered amounts that do not fit: {why}"));
                    return;
                }
                self.pre_settlement = Some(a);
                self.confirmation = None;
            }
            (Txn::Settle, Reply::Settled { setl_id, amounts }) => {
                let expected = self.confirmation.as_ref().map(|c| c.amounts);
                self.settled = Some(Settled {
                    setl_id: Some(setl_id),
                    amounts,
                    at: now,
                });
                if expected != Some(amounts) {
                    self.done.push(call);
                    self.attention = Some(format!(
                        "2207 settled {amounts:?}, the patient confirmed {expected:?}"
                    ));
                    return;
                }
            }
            (Txn::SettleRevoke, _) => {}
            (_, Reply::Accepted) => {}
            (t, other) => {
                self.done.push(call);
                self.attention = Some(format!("{t} answered an unexpected output {other:?}"));
                return;
            }
        }
        self.done.push(call);
    }

    fn check_amounts(&self, a: &Amounts) -> Result<(), String> {
        a.check()?;
        if a.total != self.bill.total {
            return Err(format!(
                "total {} is not the bill's {}",
                a.total, self.bill.total
            ));
        }
        Ok(())
    }

    /// A definite failure of a step: before settlement the saga backs out; a compensation or a
    /// cancellation that fails needs a person.
    fn refused(&mut self, txn: Txn, why: String) {
        match (&self.goal, txn) {
            (Goal::Settle, _) if self.forward().contains(&txn) => {
                self.goal = Goal::Abort { reason: why };
            }
            _ => self.attention = Some(why),
        }
    }

    /// The patient (or staff on their behalf) confirms the pre-settlement's amounts; for a
    /// self-pay bill, the bill's total, which settles it.
    pub fn confirm(
        &mut self,
        by: &str,
        amounts: Amounts,
        now: DateTime<Utc>,
    ) -> Result<(), SagaError> {
        if self.next() != Next::WaitForPatient {
            return Err(SagaError::NotAwaitingConfirmation {
                id: self.id.clone(),
                phase: self.phase(),
            });
        }
        let expected = match self.kind {
            Kind::Insured { .. } => self.pre_settlement,
            Kind::SelfPay => Some(Amounts {
                total: self.bill.total,
                fund: crate::billing::money::Fen::ZERO,
                account: crate::billing::money::Fen::ZERO,
                cash: self.bill.total,
            }),
        };
        let Some(expected) = expected.filter(|e| *e == amounts) else {
            return Err(SagaError::AmountsDiffer {
                expected: Box::new(expected.unwrap_or(amounts)),
            });
        };
        self.confirmation = Some(super::Confirmation {
            by: by.to_owned(),
            at: now,
            amounts: expected,
        });
        if self.kind == Kind::SelfPay {
            self.settled = Some(Settled {
                setl_id: None,
                amounts: expected,
                at: now,
            });
        }
        self.touch(now);
        Ok(())
    }

    /// Cancels: before settlement the saga backs out (compensating what is in effect); after
    /// it, 2208 revokes the settlement and the patient is refunded. Refused while a call is in
    /// flight or a reversal is due (cancel again once it ended), and once backed out.
    pub fn cancel(&mut self, reason: &str, now: DateTime<Utc>) -> Result<(), SagaError> {
        let phase = self.phase();
        if self.in_flight.is_some() || self.to_reverse.is_some() {
            return Err(SagaError::Busy {
                id: self.id.clone(),
                phase,
            });
        }
        match (phase, &self.goal) {
            (Phase::Settled, _) => {
                self.goal = Goal::Cancel {
                    reason: reason.to_owned(),
                };
            }
            (Phase::InProgress | Phase::AwaitingConfirmation, Goal::Settle) => {
                self.goal = Goal::Abort {
                    reason: reason.to_owned(),
                };
            }
            _ => {
                return Err(SagaError::NothingToCancel {
                    id: self.id.clone(),
                    phase,
                });
            }
        }
        self.touch(now);
        Ok(())
    }

    /// An operator asks to reverse a call whose outcome was never recorded or stayed
    /// uncertain (found by reconciliation). A reversal is never reversed.
    pub fn reverse(&mut self, msgid: &MsgId, now: DateTime<Utc>) -> Result<(), SagaError> {
        let rec = self.call(msgid).ok_or_else(|| SagaError::UnknownCall {
            id: self.id.clone(),
            msgid: msgid.to_string(),
        })?;
        if rec.call.txn == Txn::Reversal {
            return Err(SagaError::ReversalOfReversal {
                msgid: msgid.to_string(),
            });
        }
        let call = rec.call.clone();
        if self.in_flight.is_some() || self.to_reverse.is_some() {
            return Err(SagaError::Busy {
                id: self.id.clone(),
                phase: self.phase(),
            });
        }
        // A success in effect is revoked by its business cancellation, not reversed here.
        if self.done.contains(&call)
            || !matches!(rec.outcome, Some(Outcome::Uncertain { .. }) | None)
        {
            return Err(SagaError::NothingToCancel {
                id: self.id.clone(),
                phase: self.phase(),
            });
        }
        self.to_reverse = Some(call);
        self.reversal_attempts = 0;
        self.attention = None;
        self.touch(now);
        Ok(())
    }
}
