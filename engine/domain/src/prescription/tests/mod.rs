//! The prescription aggregate: the physician-only drafting (no plugin), the deny list, the
//! signature, the pharmacist gate, and (in `delivery`) the delivery callbacks: duplicate,
//! late, impossible.

use chrono::{DateTime, Duration, Utc};

use super::*;
use crate::signature::{Signature, SignatureError, SignatureVerifier};

fn t(minute: i64) -> DateTime<Utc> {
    "2026-03-02T02:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(minute)
}

fn expert() -> Actor {
    Actor::new("dr-wang", Role::Expert)
}

fn pharmacist() -> Actor {
    Actor::new("ph-zhao", Role::Pharmacist)
}

fn line(code: &str, name: &str) -> PrescriptionLine {
    PrescriptionLine {
        drug_code: code.into(),
        drug_name: name.into(),
        category: None,
        dose: "20".into(),
        dose_unit: "mg".into(),
        route: DrugRoute::Oral,
        frequency: "qd".into(),
        days: 28,
        quantity: 2,
        quantity_unit: "盒".into(),
    }
}

fn lines() -> Vec<PrescriptionLine> {
    vec![
        line("XC10AAA126A001", "阿托伐他汀钙片"),
        line("XB01ACA056A001", "阿司匹林肠溶片"),
    ]
}

fn draft_cmd(by: Actor, lines: Vec<PrescriptionLine>) -> PrescriptionCommand {
    PrescriptionCommand::Draft {
        prescription_id: "rx-001".into(),
        consultation_id: "c-0001".into(),
        patient_id: "p-42".into(),
        lines,
        by,
    }
}

/// A test signature: the value is an FNV-1a hash of the document, which [`TestVerifier`]
/// recomputes; enough to show that a change of content breaks verification.
fn fnv(bytes: &[u8]) -> Vec<u8> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h.to_be_bytes().to_vec()
}

fn sign(rx: &Prescription, at: DateTime<Utc>) -> Signature {
    Signature {
        algorithm: "test-fnv".into(),
        value: fnv(&rx.canonical_bytes()),
        certificate_chain: vec![vec![0x30, 0x01], vec![0x30, 0x02]],
        signed_at: at,
        signer: "Dr Wang".into(),
        timestamp_token: None,
    }
}

struct TestVerifier;

impl SignatureVerifier for TestVerifier {
    fn verify(&self, document: &[u8], signature: &Signature) -> Result<String, SignatureError> {
        if fnv(document) == signature.value {
            Ok(signature.signer.clone())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// Decides and applies; panics with the error when refused.
fn run(
    policy: &PrescriptionPolicy,
    rx: &mut Prescription,
    cmd: PrescriptionCommand,
    now: DateTime<Utc>,
) -> Vec<PrescriptionEvent> {
    let events = policy
        .decide(rx, &cmd, now)
        .unwrap_or_else(|e| panic!("{}: {e}", cmd.action()));
    for e in &events {
        rx.apply(e);
    }
    events
}

fn drafted(policy: &PrescriptionPolicy) -> Prescription {
    let mut rx = Prescription::default();
    run(policy, &mut rx, draft_cmd(expert(), lines()), t(0));
    rx
}

fn submitted(policy: &PrescriptionPolicy) -> Prescription {
    let mut rx = drafted(policy);
    let signature = sign(&rx, t(1));
    let cmd = PrescriptionCommand::Submit {
        signature,
        by: expert(),
    };
    run(policy, &mut rx, cmd, t(1));
    rx
}

fn active(policy: &PrescriptionPolicy) -> Prescription {
    let mut rx = submitted(policy);
    let cmd = PrescriptionCommand::Approve {
        by: pharmacist(),
        note: None,
    };
    run(policy, &mut rx, cmd, t(5));
    rx
}

fn callback(id: &str, status: DeliveryStatus, minute: i64) -> PrescriptionCommand {
    PrescriptionCommand::Delivery {
        callback: DeliveryCallback {
            event_id: id.into(),
            status,
            occurred_at: t(minute),
            tracking: Some("SF1234567890".into()),
            detail: None,
        },
    }
}

#[test]
fn happy_path_reaches_delivered_with_review_and_signature() {
    let policy = PrescriptionPolicy::default();
    let mut rx = active(&policy);
    assert_eq!(rx.state, PrescriptionState::Active);
    let review = rx.review.clone().unwrap();
    assert_eq!(review.task_id, "rx-001/pharmacist-review");
    assert_eq!(review.pharmacist.as_deref(), Some("ph-zhao"));
    assert_eq!(review.approved, Some(true));
    assert_eq!(rx.verify_signature(&TestVerifier).unwrap(), "Dr Wang");
    run(
        &policy,
        &mut rx,
        callback("e1", DeliveryStatus::Dispatched, 60),
        t(61),
    );
    assert_eq!(rx.state, PrescriptionState::Dispatched);
    run(
        &policy,
        &mut rx,
        callback("e2", DeliveryStatus::Delivered, 300),
        t(301),
    );
    assert_eq!(rx.state, PrescriptionState::Delivered);
    assert_eq!(rx.version, 5);
    assert_eq!(rx.delivery.len(), 2);
    assert_eq!(rx.updated_at, Some(t(301)));
}

#[test]
fn a_plugin_or_the_system_cannot_draft() {
    let policy = PrescriptionPolicy::default();
    for actor in [
        Actor::new("triage@1.2.0", Role::Plugin),
        Actor::new("engine", Role::System),
    ] {
        let err = policy
            .decide(
                &Prescription::default(),
                &draft_cmd(actor.clone(), lines()),
                t(0),
            )
            .unwrap_err();
        assert!(
            matches!(&err, PrescriptionError::Automated { actor: a, action: "draft", id } if *a == actor && id == "rx-001"),
            "{err:?}"
        );
        assert!(err.to_string().contains("CN-20"), "{err}");
    }
    let err = policy
        .decide(
            &Prescription::default(),
            &draft_cmd(pharmacist(), lines()),
            t(0),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            PrescriptionError::RoleNotAllowed {
                allowed: "an expert or a local doctor",
                ..
            }
        ),
        "{err:?}"
    );
    // A local doctor may.
    let local = Actor::new("dr-li", Role::LocalDoctor);
    assert!(
        policy
            .decide(&Prescription::default(), &draft_cmd(local, lines()), t(0))
            .is_ok()
    );
}

#[test]
fn only_the_prescriber_revises_and_submits() {
    let policy = PrescriptionPolicy::default();
    let rx = drafted(&policy);
    let other = Actor::new("dr-chen", Role::Expert);
    let revise = PrescriptionCommand::Revise {
        lines: lines(),
        by: other.clone(),
    };
    let err = policy.decide(&rx, &revise, t(1)).unwrap_err();
    assert_eq!(
        err,
        PrescriptionError::NotPrescriber {
            id: "rx-001".into(),
            action: "revise",
            actor: other.clone(),
            prescriber: "dr-wang".into()
        }
    );
    let submit = PrescriptionCommand::Submit {
        signature: sign(&rx, t(1)),
        by: Actor::new("triage@1.2.0", Role::Plugin),
    };
    assert!(matches!(
        policy.decide(&rx, &submit, t(1)).unwrap_err(),
        PrescriptionError::Automated {
            action: "submit",
            ..
        }
    ));
}

#[test]
fn the_pharmacist_gate() {
    let policy = PrescriptionPolicy::default();
    // Not yet submitted: approval is not possible, and the error lists what is.
    let draft = drafted(&policy);
    let approve = |by: Actor| PrescriptionCommand::Approve { by, note: None };
    let err = policy
        .decide(&draft, &approve(pharmacist()), t(2))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "prescription `rx-001` is draft: cannot approve (possible now: revise, submit, cancel)"
    );
    let rx = submitted(&policy);
    // Not a pharmacist.
    let err = policy.decide(&rx, &approve(expert()), t(2)).unwrap_err();
    assert!(
        matches!(
            &err,
            PrescriptionError::RoleNotAllowed {
                allowed: "a pharmacist",
                action: "approve",
                ..
            }
        ),
        "{err:?}"
    );
    let coordinator = Actor::new("co-1", Role::Coordinator);
    assert!(matches!(
        policy.decide(&rx, &approve(coordinator), t(2)).unwrap_err(),
        PrescriptionError::RoleNotAllowed { .. }
    ));
    // The prescriber acting as a pharmacist may not review their own prescription.
    let self_review = Actor::new("dr-wang", Role::Pharmacist);
    assert_eq!(
        policy.decide(&rx, &approve(self_review), t(2)).unwrap_err(),
        PrescriptionError::SelfReview {
            id: "rx-001".into(),
            pharmacist: "dr-wang".into()
        }
    );
    // Rejection needs a reason, then is terminal.
    let reject = |reason: &str| PrescriptionCommand::Reject {
        by: pharmacist(),
        reason: reason.into(),
    };
    assert_eq!(
        policy.decide(&rx, &reject("  "), t(2)).unwrap_err(),
        PrescriptionError::MissingReason {
            id: "rx-001".into(),
            action: "reject"
        }
    );
    let mut rejected = rx.clone();
    run(&policy, &mut rejected, reject("剂量超出说明书范围"), t(3));
    assert_eq!(rejected.state, PrescriptionState::Rejected);
    assert_eq!(
        rejected.review.as_ref().unwrap().note.as_deref(),
        Some("剂量超出说明书范围")
    );
    let err = policy
        .decide(&rejected, &approve(pharmacist()), t(4))
        .unwrap_err();
    assert!(err.to_string().ends_with("(possible now: none)"), "{err}");
    // No drug before approval: a dispatch on the submitted prescription is impossible.
    let err = policy
        .decide(&rx, &callback("e1", DeliveryStatus::Dispatched, 3), t(3))
        .unwrap_err();
    assert_eq!(
        err,
        PrescriptionError::NotActive {
            id: "rx-001".into(),
            state: PrescriptionState::PendingReview,
            status: DeliveryStatus::Dispatched
        }
    );
}

#[test]
fn controlled_drugs_are_refused_naming_the_line() {
    let policy = PrescriptionPolicy {
        deny_list: DenyList {
            codes: vec!["XN02AAM001".into()],
            name_contains: vec!["吗啡".into(), "fentanyl".into()],
            categories: DenyList::special_management_categories(),
        },
        ..PrescriptionPolicy::default()
    };
    policy.validate().unwrap();
    let mut by_code = lines();
    by_code[1].drug_code = " xn02aam001 ".into();
    let mut by_name = lines();
    by_name[1].drug_name = "盐酸吗啡缓释片".into();
    let mut by_width = lines();
    by_width[0].drug_name = "ＦＥＮＴＡＮＹＬ Patch".into();
    let mut by_category = lines();
    by_category[1].category = Some("第二类精神药品".into());
    for (lines, index, hit) in [
        (by_code, 1, DenyMatch::Code("XN02AAM001".into())),
        (by_name, 1, DenyMatch::Name("吗啡".into())),
        (by_width, 0, DenyMatch::Name("fentanyl".into())),
        (by_category, 1, DenyMatch::Category("第二类精神药品".into())),
    ] {
        let err = policy
            .decide(&Prescription::default(), &draft_cmd(expert(), lines), t(0))
            .unwrap_err();
        match &err {
            PrescriptionError::ControlledDrug { line, hit: h, .. } => {
                assert_eq!((*line, h), (index, &hit), "{err}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string().contains(&format!("lines[{index}]")),
            "{err}"
        );
    }
}

#[test]
fn the_deny_list_is_checked_again_on_submission() {
    let lenient = PrescriptionPolicy::default();
    let rx = drafted(&lenient);
    let strict = PrescriptionPolicy {
        deny_list: DenyList {
            name_contains: vec!["阿司匹林".into()],
            ..DenyList::default()
        },
        ..PrescriptionPolicy::default()
    };
    let submit = PrescriptionCommand::Submit {
        signature: sign(&rx, t(1)),
        by: expert(),
    };
    assert!(matches!(
        strict.decide(&rx, &submit, t(1)).unwrap_err(),
        PrescriptionError::ControlledDrug { line: 1, .. }
    ));
    let blank = DenyList {
        categories: vec!["麻醉药品".into(), " ".into()],
        ..DenyList::default()
    };
    assert_eq!(blank.validate().unwrap_err().path, "categories[1]");
}

#[test]
fn lines_are_validated_by_path() {
    let policy = PrescriptionPolicy::default();
    let check = |edit: &dyn Fn(&mut Vec<PrescriptionLine>), field: &str| {
        let mut l = lines();
        edit(&mut l);
        match policy
            .decide(&Prescription::default(), &draft_cmd(expert(), l), t(0))
            .unwrap_err()
        {
            PrescriptionError::Invalid { field: f, .. } => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    };
    check(&|l| l.clear(), "lines");
    check(&|l| l[1].drug_code = " ".into(), "lines[1].drug_code");
    check(&|l| l[0].frequency = String::new(), "lines[0].frequency");
    for bad in ["0", "0.0", "abc", "1.", ".5", "-1", "1.2.3"] {
        check(&|l| l[1].dose = bad.into(), "lines[1].dose");
    }
    check(&|l| l[0].days = 0, "lines[0].days");
    check(&|l| l[1].quantity = 0, "lines[1].quantity");
    check(&|l| l.extend(lines().into_iter().cycle().take(4)), "lines");
    let mut ok = lines();
    ok[0].dose = "0.25".into();
    assert!(
        policy
            .decide(&Prescription::default(), &draft_cmd(expert(), ok), t(0))
            .is_ok()
    );
}

#[test]
fn the_signature_must_cover_the_current_content() {
    let policy = PrescriptionPolicy::default();
    let mut rx = drafted(&policy);
    let stale = sign(&rx, t(1));
    let mut revised = lines();
    revised[0].dose = "10".into();
    run(
        &policy,
        &mut rx,
        PrescriptionCommand::Revise {
            lines: revised,
            by: expert(),
        },
        t(2),
    );
    let submit = |signature: Signature| PrescriptionCommand::Submit {
        signature,
        by: expert(),
    };
    let err = policy.decide(&rx, &submit(stale), t(3)).unwrap_err();
    assert!(err.to_string().contains("before the last change"), "{err}");
    let future = sign(&rx, t(30));
    assert!(
        policy
            .decide(&rx, &submit(future), t(3))
            .unwrap_err()
            .to_string()
            .contains("after now")
    );
    let mut chainless = sign(&rx, t(3));
    chainless.certificate_chain.clear();
    assert!(matches!(
        policy.decide(&rx, &submit(chainless), t(3)).unwrap_err(),
        PrescriptionError::Signature { .. }
    ));
    let fresh = sign(&rx, t(3));
    run(&policy, &mut rx, submit(fresh), t(3));
    assert_eq!(rx.verify_signature(&TestVerifier).unwrap(), "Dr Wang");
    // One changed byte in a line: verification fails.
    rx.lines[1].quantity = 3;
    assert_eq!(
        rx.verify_signature(&TestVerifier),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn canonical_bytes_are_deterministic_and_unambiguous() {
    let policy = PrescriptionPolicy::default();
    let rx = drafted(&policy);
    let bytes = rx.canonical_bytes();
    assert_eq!(bytes, drafted(&policy).canonical_bytes());
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.starts_with(
        "huizhen-prescription/1\nid:6:rx-001\nconsultation_id:6:c-0001\npatient_id:4:p-42\n\
         prescriber.id:7:dr-wang\nprescriber.role:6:expert\ndrafted_at:20:2026-03-02T02:00:00Z\n\
         lines:1:2\nlines[0].drug_code:14:XC10AAA126A001\n"
    ));
    // Moving text from one field into the next gives different bytes.
    let mut a = rx.clone();
    a.lines[0].dose_unit = "mg\nlines[0].route:4:oral".into();
    let mut b = rx.clone();
    b.lines[0].dose_unit = "mg".into();
    assert_ne!(a.canonical_bytes(), b.canonical_bytes());
    // State changes are not signed content.
    let mut c = rx.clone();
    c.state = PrescriptionState::Active;
    c.version = 9;
    assert_eq!(c.canonical_bytes(), bytes);
}

/// Every state × every action: `decide` refuses exactly the actions `allowed_actions` leaves
/// out, with an `InvalidTransition` naming the state.
#[test]
fn every_state_by_every_action() {
    let policy = PrescriptionPolicy::default();
    let mut states: Vec<Prescription> = vec![
        Prescription::default(),
        drafted(&policy),
        submitted(&policy),
    ];
    let act = active(&policy);
    states.push(act.clone());
    let mut rejected = submitted(&policy);
    run(
        &policy,
        &mut rejected,
        PrescriptionCommand::Reject {
            by: pharmacist(),
            reason: "r".into(),
        },
        t(5),
    );
    states.push(rejected);
    let mut cancelled = drafted(&policy);
    run(
        &policy,
        &mut cancelled,
        PrescriptionCommand::Cancel {
            by: expert(),
            reason: "r".into(),
        },
        t(2),
    );
    states.push(cancelled);
    for status in [
        DeliveryStatus::Dispatched,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
        DeliveryStatus::Returned,
    ] {
        let mut rx = act.clone();
        run(&policy, &mut rx, callback("s", status, 60), t(60));
        states.push(rx);
    }
    let seen: std::collections::BTreeSet<_> = states.iter().map(|s| s.state).collect();
    assert_eq!(seen.len(), 10, "every state is covered: {seen:?}");
    for rx in &states {
        let commands = [
            draft_cmd(expert(), lines()),
            PrescriptionCommand::Revise {
                lines: lines(),
                by: expert(),
            },
            PrescriptionCommand::Submit {
                signature: sign(rx, t(90)),
                by: expert(),
            },
            PrescriptionCommand::Approve {
                by: pharmacist(),
                note: None,
            },
            PrescriptionCommand::Reject {
                by: pharmacist(),
                reason: "r".into(),
            },
            PrescriptionCommand::Cancel {
                by: expert(),
                reason: "r".into(),
            },
            callback("x", DeliveryStatus::Delivered, 100),
        ];
        for cmd in &commands {
            let allowed = allowed_actions(rx.state).contains(&cmd.action());
            let result = policy.decide(rx, cmd, t(100));
            match result {
                Err(PrescriptionError::InvalidTransition { state, .. }) => {
                    assert!(!allowed, "{} refused in {}", cmd.action(), rx.state);
                    assert_eq!(state, rx.state);
                }
                Err(PrescriptionError::NotActive { state, .. }) => {
                    assert!(!allowed && cmd.action() == "delivery", "{}", rx.state);
                    assert_eq!(state, rx.state);
                }
                Ok(_) => assert!(allowed, "{} accepted in {}", cmd.action(), rx.state),
                Err(e) => panic!("{} in {}: {e}", cmd.action(), rx.state),
            }
        }
    }
}

#[test]
fn replay_rebuilds_the_same_state_and_events_round_trip_json() {
    let policy = PrescriptionPolicy::default();
    let mut rx = Prescription::default();
    let mut log = Vec::new();
    log.extend(run(&policy, &mut rx, draft_cmd(expert(), lines()), t(0)));
    let signature = sign(&rx, t(1));
    log.extend(run(
        &policy,
        &mut rx,
        PrescriptionCommand::Submit {
            signature,
            by: expert(),
        },
        t(1),
    ));
    log.extend(run(
        &policy,
        &mut rx,
        PrescriptionCommand::Approve {
            by: pharmacist(),
            note: Some("ok".into()),
        },
        t(2),
    ));
    log.extend(run(
        &policy,
        &mut rx,
        callback("e2", DeliveryStatus::Delivered, 9),
        t(9),
    ));
    log.extend(run(
        &policy,
        &mut rx,
        callback("e1", DeliveryStatus::Dispatched, 8),
        t(10),
    ));
    assert_eq!(Prescription::replay(&log), rx);
    let json = serde_json::to_string(&log).unwrap();
    assert!(json.contains("\"event\":\"callback-noted\""), "{json}");
    let back: Vec<PrescriptionEvent> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, log);
    let policy_yaml = "deny_list:\n  categories: [麻醉药品]\nmax_lines: 3\n";
    let parsed: PrescriptionPolicy = serde_saphyr::from_str(policy_yaml).unwrap();
    assert_eq!(parsed.max_lines, 3);
    assert_eq!(parsed.signature_skew_seconds, 300);
    assert!(serde_saphyr::from_str::<PrescriptionPolicy>("max_line: 3\n").is_err());
}

mod delivery;
