//! The saga against a model of the platform, under random outcomes, lost answers, restarts,
//! cancellations and confirmations: whatever happens, the platform never holds two settlements,
//! and when the saga rests its books match the platform's.

use proptest::prelude::*;

use super::*;

/// What the model platform holds: the committed calls, each (msgid, transaction).
#[derive(Default)]
struct Platform {
    committed: Vec<(MsgId, Txn)>,
}

impl Platform {
    fn count(&self, t: Txn) -> i64 {
        self.committed.iter().filter(|(_, x)| *x == t).count() as i64
    }

    /// Settlements in force (2207s less 2208s).
    fn settlements(&self) -> i64 {
        self.count(Txn::Settle) - self.count(Txn::SettleRevoke)
    }

    fn fee_details(&self) -> i64 {
        self.count(Txn::FeeUpload) - self.count(Txn::FeeRevoke)
    }

    fn registrations(&self) -> i64 {
        self.count(Txn::Register) - self.count(Txn::RegisterRevoke)
    }

    /// Applies a call that reached the platform.
    fn commit(&mut self, call: &CallRef) {
        match &call.reverses {
            Some(target) => self.committed.retain(|(m, _)| m != &target.msgid),
            None if call.txn.has_effect() => self.committed.push((call.msgid.clone(), call.txn)),
            None => {}
        }
    }
}

/// What happens to one call.
#[derive(Clone, Copy, Debug)]
enum Fate {
    Ok,
    Refused,
    /// Committed, the answer lost.
    LostAfter,
    /// Never reached the platform.
    LostBefore,
    /// Committed, then the engine died before recording the answer.
    CrashAfter,
    /// The engine died after persisting, before sending.
    CrashBefore,
    /// The connection was refused: nothing reached the platform.
    Refused503,
}

fn fates() -> impl Strategy<Value = Fate> {
    prop_oneof![
        6 => Just(Fate::Ok),
        1 => Just(Fate::Refused),
        1 => Just(Fate::LostAfter),
        1 => Just(Fate::LostBefore),
        1 => Just(Fate::CrashAfter),
        1 => Just(Fate::CrashBefore),
        1 => Just(Fate::Refused503),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// Let the engine take the next step with this fate.
    Step(Fate),
    /// Someone cancels (may be refused).
    Cancel,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![9 => fates().prop_map(Op::Step), 1 => Just(Op::Cancel)],
        0..60,
    )
}

fn check_always(s: &Settlement, p: &Platform) {
    assert!(
        (0..=1).contains(&p.settlements()),
        "{} settlements in force",
        p.settlements()
    );
    for c in &s.calls {
        if let Some(t) = &c.call.reverses {
            assert_ne!(t.txn, Txn::Reversal, "a reversal was reversed");
            assert_eq!(c.call.txn, Txn::Reversal);
        }
    }
}

/// One engine step: what `next` says, with the fate for a call. Returns false at rest.
fn step(s: &mut Settlement, p: &mut Platform, ids: &mut Ids, fate: Fate) -> bool {
    match s.next() {
        Next::Send { txn, .. } => {
            if txn == Txn::Settle {
                // Never a second 2207 while an earlier one may be in force.
                assert_eq!(p.settlements(), 0, "2207 sent with a settlement in force");
            }
            let call = s.begin(ids.next(), t0()).unwrap();
            let outcome = match fate {
                Fate::Ok => {
                    p.commit(&call);
                    ok(call.txn)
                }
                Fate::Refused => Outcome::Refused {
                    code: "-1".into(),
                    message: "refused".into(),
                },
                Fate::LostAfter => {
                    p.commit(&call);
                    uncertain()
                }
                Fate::LostBefore => uncertain(),
                Fate::CrashAfter => {
                    p.commit(&call);
                    return true;
                }
                Fate::CrashBefore => return true,
                Fate::Refused503 => Outcome::NotSent {
                    why: "connection refused".into(),
                },
            };
            s.complete(&call.msgid, outcome, t0()).unwrap();
            true
        }
        Next::AwaitOutcome(call) => {
            // Loaded after a restart with a call in flight.
            let reloaded: Settlement =
                serde_json::from_str(&serde_json::to_string(&*s).unwrap()).unwrap();
            *s = reloaded;
            s.complete(
                &call.msgid,
                Outcome::Uncertain {
                    why: "no outcome recorded before a restart".into(),
                },
                t0(),
            )
            .unwrap();
            true
        }
        Next::WaitForPatient => {
            let a = s.pre_settlement.unwrap();
            s.confirm("patient", a, t0()).unwrap();
            true
        }
        Next::Finished(_) => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn the_books_balance_whatever_happens(ops in ops()) {
        let mut s = insured();
        let mut p = Platform::default();
        let mut ids = Ids::default();
        for op in ops {
            match op {
                Op::Step(fate) => {
                    step(&mut s, &mut p, &mut ids, fate);
                }
                Op::Cancel => {
                    let before = s.phase();
                    match s.cancel("cancelled", t0()) {
                        Ok(()) => prop_assert!(matches!(
                            before,
                            Phase::Settled | Phase::InProgress | Phase::AwaitingConfirmation
                        )),
                        Err(SagaError::Busy { .. } | SagaError::NothingToCancel { .. }) => {}
                        Err(e) => prop_assert!(false, "unexpected refusal {e}"),
                    }
                }
            }
            check_always(&s, &p);
        }
        // From here every call answers: the saga must come to rest.
        let mut n = 0;
        while step(&mut s, &mut p, &mut ids, Fate::Ok) {
            check_always(&s, &p);
            n += 1;
            prop_assert!(n < 200, "no rest");
        }
        match s.phase() {
            Phase::Settled => {
                prop_assert_eq!(p.settlements(), 1);
                prop_assert_eq!(s.patient_pays(), amounts().patient());
            }
            Phase::Aborted | Phase::Cancelled => {
                prop_assert_eq!(p.settlements(), 0);
                prop_assert_eq!(p.fee_details(), 0);
                prop_assert_eq!(p.registrations(), 0);
                prop_assert_eq!(s.patient_pays(), Fen::ZERO);
            }
            Phase::Attention => prop_assert!(s.attention.is_some()),
            other => prop_assert!(false, "rests in {other}"),
        }
    }
}
