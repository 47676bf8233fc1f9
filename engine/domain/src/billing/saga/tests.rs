mod model;

use chrono::{DateTime, FixedOffset, TimeDelta, Utc};

use super::*;
use crate::billing::coverage::{
    CoverageItem, CoveragePolicy, Eligibility, PatientCoverage, SimplePolicy,
};
use crate::billing::fee::{Billable, FeeLine};
use crate::billing::msgid::{MsgIdCursor, next_msgid};
use crate::billing::schedule::ItemCodes;
use crate::consultation::ServiceType;
use crate::expert::Title;

pub(crate) fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-15T02:30:05Z")
        .unwrap()
        .to_utc()
}

pub(crate) fn coverage() -> PatientCoverage {
    PatientCoverage {
        insurer: "城镇职工医保".into(),
        plan: "门诊统筹".into(),
        active: true,
        eligibility: Eligibility::Eligible,
        deductible: Fen::ZERO,
        annual_limit: None,
        year_to_date: Default::default(),
    }
}

pub(crate) fn bill(total: i64) -> FeeBill {
    let line = FeeLine {
        name: "远程会诊".into(),
        codes: ItemCodes {
            local: "HZ-YCHZ-01".into(),
            national: "003101000010000".into(),
            province: "310100001-1".into(),
            mapping_version: "2026.01".into(),
        },
        quantity: 1,
        unit_price: Fen(total),
        amount: Fen(total),
        covered: true,
    };
    FeeBill {
        billable: Billable {
            consultation_id: "C1".into(),
            patient: 7,
            facility: "H44010600001".into(),
            province: Some("44".into()),
            service_type: ServiceType::InstitutionToInstitution,
            department: "cardiology".into(),
            diagnoses: Vec::new(),
            expert: "E1".into(),
            expert_title: Title::Chief,
            expert_facility: Some("H11010100001".into()),
            minutes: 20,
            agreement: Some("AGR-1".into()),
            completed_at: t0(),
        },
        lines: vec![line],
        total: Fen(total),
    }
}

pub(crate) fn open(kind: Kind) -> Settlement {
    let bill = bill(25_000);
    let estimate = SimplePolicy::default()
        .cover(&CoverageItem::of_bill(&bill), &coverage())
        .unwrap();
    Settlement::open("S1", "H44010600001", kind, bill, estimate, t0())
}

pub(crate) fn insured() -> Settlement {
    open(Kind::Insured {
        voucher: Voucher {
            cert_type: "02".into(),
            cert_no: "440106199001011234".into(),
            insuplc_admdvs: None,
            qr: None,
        },
    })
}

/// Hands out msgids like the store does.
#[derive(Default)]
pub(crate) struct Ids(Option<MsgIdCursor>);

impl Ids {
    pub(crate) fn next(&mut self) -> MsgId {
        let (id, c) = next_msgid(
            "H44010600001",
            self.0,
            t0(),
            FixedOffset::east_opt(8 * 3600).unwrap(),
        )
        .unwrap();
        self.0 = Some(c);
        id
    }
}

pub(crate) fn amounts() -> Amounts {
    Amounts {
        total: Fen(25_000),
        fund: Fen(15_000),
        account: Fen(4_000),
        cash: Fen(6_000),
    }
}

/// The success the platform gives for `txn`.
pub(crate) fn ok(txn: Txn) -> Outcome {
    let reply = match txn {
        Txn::PersonInfo => Reply::Person(Person {
            psn_no: "P0001".into(),
            insuplc_admdvs: "440100".into(),
            coverage: coverage(),
        }),
        Txn::Register => Reply::Registered {
            mdtrt_id: "MD1".into(),
        },
        Txn::PreSettle => Reply::PreSettled(amounts()),
        Txn::Settle => Reply::Settled {
            setl_id: "SETL1".into(),
            amounts: amounts(),
        },
        _ => Reply::Accepted,
    };
    Outcome::Ok { reply }
}

fn uncertain() -> Outcome {
    Outcome::Uncertain {
        why: "timeout after 10 s".into(),
    }
}

/// Sends what the saga asks for with `answer` deciding each outcome, confirming when asked,
/// until it rests. Returns the transactions sent.
pub(crate) fn drive(
    s: &mut Settlement,
    ids: &mut Ids,
    mut answer: impl FnMut(&CallRef) -> Outcome,
) -> Vec<String> {
    let mut sent = Vec::new();
    for _ in 0..100 {
        match s.next() {
            Next::Send { .. } => {
                let call = s.begin(ids.next(), t0()).unwrap();
                sent.push(match &call.reverses {
                    Some(r) => format!("2601({})", r.txn),
                    None => call.txn.code().to_owned(),
                });
                let outcome = answer(&call);
                s.complete(&call.msgid, outcome, t0()).unwrap();
            }
            Next::WaitForPatient if s.pre_settlement.is_some() || s.kind == Kind::SelfPay => {
                let a = s.pre_settlement.unwrap_or(Amounts {
                    total: s.bill.total,
                    fund: Fen::ZERO,
                    account: Fen::ZERO,
                    cash: s.bill.total,
                });
                s.confirm("patient", a, t0()).unwrap();
                sent.push("confirm".into());
            }
            _ => return sent,
        }
    }
    panic!("the saga did not come to rest: {sent:?}");
}

#[test]
fn the_insured_path_in_order() {
    let mut s = insured();
    let mut ids = Ids::default();
    let sent = drive(&mut s, &mut ids, |c| ok(c.txn));
    assert_eq!(
        sent,
        ["1101", "2201", "2203", "2204", "2206", "confirm", "2207"]
    );
    assert_eq!(s.phase(), Phase::Settled);
    assert_eq!(
        s.settled.as_ref().unwrap().setl_id.as_deref(),
        Some("SETL1")
    );
    assert_eq!(s.patient_pays(), Fen(10_000));
    // open, then begin + complete per call, and the confirmation.
    assert_eq!(s.version, 1 + 2 * 6 + 1);
    assert!(s.calls.iter().all(|c| c.call.msgid.as_str().len() == 30));
}

#[test]
fn a_qr_voucher_is_decoded_first_and_forgotten() {
    let mut s = insured();
    s.kind = Kind::Insured {
        voucher: Voucher {
            cert_type: String::new(),
            cert_no: String::new(),
            insuplc_admdvs: None,
            qr: Some("QR-TOKEN".into()),
        },
    };
    let mut ids = Ids::default();
    let decoded = Voucher {
        cert_type: "01".into(),
        cert_no: "EC-TOKEN".into(),
        insuplc_admdvs: Some("450100".into()),
        qr: Some("echoed back".into()),
    };
    let mut first_query = true;
    let sent = drive(&mut s, &mut ids, |c| match c.txn {
        // An uncertain decode is asked again (it changes nothing at the platform).
        Txn::VoucherDecode if std::mem::take(&mut first_query) => uncertain(),
        Txn::VoucherDecode => Outcome::Ok {
            reply: Reply::Voucher(decoded.clone()),
        },
        t => ok(t),
    });
    assert_eq!(
        sent,
        [
            "ec.query", "ec.query", "1101", "2201", "2203", "2204", "2206", "confirm", "2207"
        ]
    );
    assert_eq!(s.phase(), Phase::Settled);
    let Kind::Insured { voucher } = &s.kind else {
        panic!("{:?}", s.kind)
    };
    assert_eq!(voucher.cert_no, "EC-TOKEN");
    assert_eq!(voucher.qr, None, "never the QR code");
    // A refused decode backs out before anything is in effect.
    let mut s = insured();
    s.kind = Kind::Insured {
        voucher: Voucher {
            cert_type: String::new(),
            cert_no: String::new(),
            insuplc_admdvs: None,
            qr: Some("QR".into()),
        },
    };
    let sent = drive(&mut s, &mut Ids::default(), |c| match c.txn {
        Txn::VoucherDecode => Outcome::Refused {
            code: "-1".into(),
            message: "does not decode".into(),
        },
        t => ok(t),
    });
    assert_eq!(sent, ["ec.query"]);
    assert_eq!(s.phase(), Phase::Aborted);
}

#[test]
fn a_timeout_on_2207_is_reversed_once_never_retried_blind() {
    let mut s = insured();
    let mut ids = Ids::default();
    let mut first_2207: Option<CallRef> = None;
    let sent = drive(&mut s, &mut ids, |c| match c.txn {
        Txn::Settle if first_2207.is_none() => {
            first_2207 = Some(c.clone());
            uncertain()
        }
        Txn::Reversal => {
            let target = c.reverses.as_deref().unwrap();
            assert_eq!(
                Some(target),
                first_2207.as_ref(),
                "2601 names the original msgid and infno"
            );
            ok(Txn::Reversal)
        }
        t => ok(t),
    });
    assert_eq!(
        sent,
        [
            "1101",
            "2201",
            "2203",
            "2204",
            "2206",
            "confirm",
            "2207",
            "2601(2207)",
            "2207"
        ]
    );
    assert_eq!(s.phase(), Phase::Settled);
    let settles: Vec<_> = s
        .calls
        .iter()
        .filter(|c| c.call.txn == Txn::Settle)
        .collect();
    assert_ne!(settles[0].call.msgid, settles[1].call.msgid);
}

#[test]
fn a_restart_with_a_call_in_flight_makes_it_uncertain() {
    let mut s = insured();
    let mut ids = Ids::default();
    drive(&mut s, &mut ids, |c| ok(c.txn));
    let mut s = insured();
    for _ in 0..5 {
        let call = s.begin(ids.next(), t0()).unwrap();
        s.complete(&call.msgid, ok(call.txn), t0()).unwrap();
    }
    s.confirm("patient", amounts(), t0()).unwrap();
    let call = s.begin(ids.next(), t0()).unwrap();
    assert_eq!(call.txn, Txn::Settle);
    // Persisted here; the process dies; the saga is loaded again.
    let reloaded: Settlement = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    let mut s = reloaded;
    assert_eq!(s.next(), Next::AwaitOutcome(call.clone()));
    assert_eq!(s.phase(), Phase::InProgress);
    s.complete(&call.msgid, uncertain(), t0()).unwrap();
    assert_eq!(
        s.next(),
        Next::Send {
            txn: Txn::Reversal,
            target: Some(call)
        }
    );
    assert_eq!(s.phase(), Phase::Reversing);
    // Anything else is refused meanwhile.
    assert!(matches!(s.cancel("x", t0()), Err(SagaError::Busy { .. })));
}

#[test]
fn a_refusal_backs_out_what_is_in_effect() {
    let mut s = insured();
    let mut ids = Ids::default();
    let sent = drive(&mut s, &mut ids, |c| match c.txn {
        Txn::PreSettle => Outcome::Refused {
            code: "-1".into(),
            message: "目录外项目".into(),
        },
        t => ok(t),
    });
    assert_eq!(
        sent,
        ["1101", "2201", "2203", "2204", "2206", "2205", "2202"]
    );
    assert_eq!(s.phase(), Phase::Aborted);
    assert!(matches!(&s.goal, Goal::Abort { reason } if reason.contains("目录外项目")));
}

#[test]
fn a_cancellation_after_settlement_revokes_and_refunds() {
    let mut s = insured();
    let mut ids = Ids::default();
    drive(&mut s, &mut ids, |c| ok(c.txn));
    s.cancel("patient asked for a refund", t0()).unwrap();
    assert_eq!(s.phase(), Phase::Cancelling);
    let sent = drive(&mut s, &mut ids, |c| ok(c.txn));
    assert_eq!(sent, ["2208", "2205", "2202"]);
    assert_eq!(s.phase(), Phase::Cancelled);
    assert_eq!(s.patient_pays(), Fen::ZERO);
    assert!(matches!(
        s.cancel("again", t0()),
        Err(SagaError::NothingToCancel { .. })
    ));
}

#[test]
fn a_reversal_is_never_reversed() {
    let mut s = insured();
    let mut ids = Ids::default();
    let first = s.begin(ids.next(), t0()).unwrap();
    s.complete(&first.msgid, ok(Txn::PersonInfo), t0()).unwrap();
    let reg = s.begin(ids.next(), t0()).unwrap();
    s.complete(&reg.msgid, uncertain(), t0()).unwrap();
    let rev = s.begin(ids.next(), t0()).unwrap();
    assert_eq!(rev.txn, Txn::Reversal);
    s.complete(&rev.msgid, uncertain(), t0()).unwrap();
    // The 2601 stays uncertain: it is asked again (a new msgid, the same original), and an
    // operator cannot reverse the 2601 itself.
    assert_eq!(
        s.reverse(&rev.msgid, t0()),
        Err(SagaError::ReversalOfReversal {
            msgid: rev.msgid.to_string()
        })
    );
    let again = s.begin(ids.next(), t0()).unwrap();
    assert_eq!(again.reverses.as_deref(), Some(&reg));
    assert_ne!(again.msgid, rev.msgid);
}

#[test]
fn a_refused_reversal_needs_a_person() {
    let mut s = insured();
    let mut ids = Ids::default();
    let sent = drive(&mut s, &mut ids, |c| match c.txn {
        Txn::Register => uncertain(),
        Txn::Reversal => Outcome::Refused {
            code: "-1".into(),
            message: "原交易不存在".into(),
        },
        t => ok(t),
    });
    assert_eq!(sent, ["1101", "2201", "2601(2201)"]);
    assert_eq!(s.phase(), Phase::Attention);
    assert!(s.attention.as_deref().unwrap().contains("原交易不存在"));
    // Reconciliation found the 2201 never committed; an operator reverses it again.
    let reg = s.calls[1].call.msgid.clone();
    s.reverse(&reg, t0()).unwrap();
    assert_eq!(s.phase(), Phase::Reversing);
}

#[test]
fn read_only_steps_are_asked_again() {
    let mut s = insured();
    let mut ids = Ids::default();
    let mut n = 0;
    let sent = drive(&mut s, &mut ids, |c| match c.txn {
        Txn::PersonInfo if n < 2 => {
            n += 1;
            uncertain()
        }
        t => ok(t),
    });
    assert_eq!(&sent[..3], ["1101", "1101", "1101"]);
    assert_eq!(s.phase(), Phase::Settled);
    // Three uncertain answers in a row abort.
    let mut s = insured();
    let sent = drive(&mut s, &mut ids, |c| match c.txn {
        Txn::PersonInfo => uncertain(),
        t => ok(t),
    });
    assert_eq!(sent, ["1101", "1101", "1101"]);
    assert_eq!(s.phase(), Phase::Aborted);
}

#[test]
fn a_request_that_never_left_is_asked_again() {
    let mut s = insured();
    let mut ids = Ids::default();
    let mut refused = 0;
    let sent = drive(&mut s, &mut ids, |c| match c.txn {
        Txn::Settle | Txn::Reversal if refused < 2 => {
            refused += 1;
            Outcome::NotSent {
                why: "connection refused".into(),
            }
        }
        t => ok(t),
    });
    assert_eq!(
        sent,
        [
            "1101", "2201", "2203", "2204", "2206", "confirm", "2207", "2207", "2207"
        ]
    );
    assert_eq!(s.phase(), Phase::Settled);
    assert!(
        s.reversals.is_empty(),
        "nothing to reverse: nothing reached the platform"
    );
}

#[test]
fn the_patient_confirms_exactly_the_pre_settlement() {
    let mut s = insured();
    let mut ids = Ids::default();
    for _ in 0..5 {
        let call = s.begin(ids.next(), t0()).unwrap();
        s.complete(&call.msgid, ok(call.txn), t0()).unwrap();
    }
    assert_eq!(s.phase(), Phase::AwaitingConfirmation);
    assert!(matches!(
        s.begin(ids.next(), t0()),
        Err(SagaError::NothingToSend { .. })
    ));
    let mut other = amounts();
    other.cash = Fen(5_999);
    other.fund = Fen(15_001);
    assert!(matches!(
        s.confirm("patient", other, t0()),
        Err(SagaError::AmountsDiffer { .. })
    ));
    s.confirm("patient", amounts(), t0()).unwrap();
    assert!(matches!(
        s.confirm("patient", amounts(), t0()),
        Err(SagaError::NotAwaitingConfirmation { .. })
    ));
}

#[test]
fn a_pre_settlement_that_does_not_add_up_aborts() {
    let mut s = insured();
    let mut ids = Ids::default();
    drive(&mut s, &mut ids, |c| match c.txn {
        Txn::PreSettle => Outcome::Ok {
            reply: Reply::PreSettled(Amounts {
                total: Fen(30_000),
                ..amounts()
            }),
        },
        t => ok(t),
    });
    assert_eq!(s.phase(), Phase::Aborted);
}

#[test]
fn self_pay_settles_on_confirmation() {
    let mut s = open(Kind::SelfPay);
    let mut ids = Ids::default();
    assert_eq!(s.phase(), Phase::AwaitingConfirmation);
    let sent = drive(&mut s, &mut ids, |c| ok(c.txn));
    assert_eq!(sent, ["confirm"]);
    assert_eq!(s.phase(), Phase::Settled);
    assert_eq!(s.patient_pays(), Fen(25_000));
    s.cancel("refund", t0() + TimeDelta::minutes(5)).unwrap();
    assert_eq!(s.phase(), Phase::Cancelled);
}

#[test]
fn msgids_are_not_reused_and_only_the_call_in_flight_completes() {
    let mut s = insured();
    let mut ids = Ids::default();
    let a = s.begin(ids.next(), t0()).unwrap();
    let other = ids.next();
    assert!(matches!(
        s.complete(&other, ok(Txn::PersonInfo), t0()),
        Err(SagaError::NotInFlight { .. })
    ));
    s.complete(&a.msgid, ok(Txn::PersonInfo), t0()).unwrap();
    assert!(matches!(
        s.begin(a.msgid.clone(), t0()),
        Err(SagaError::MsgIdReused { .. })
    ));
}
