//! SLA escalation with an injected clock (MATCH-20, CN-80): re-offer at the deadline, fan out,
//! escalate after K failed offers, overrides per province, agreement and facility pair.

use huizhen_domain::consultation::*;

use crate::support::*;

fn candidates() -> Vec<Offeree> {
    ["E1", "E2", "E3", "E4", "E5"].map(offeree).to_vec()
}

/// Carries out a next step as the engine's sweep would, at `at`.
fn carry_out(k: &mut Case, step: &NextStep, at: chrono::DateTime<chrono::Utc>) {
    let command = step.command().expect("a step with a command");
    k.try_run_at(at, &system(), command)
        .unwrap_or_else(|e| panic!("{step:?} at {at}: {e}"));
}

#[test]
fn an_unanswered_urgent_offer_is_re_offered_then_fanned_out_then_escalated() {
    let policy = SlaPolicy::default();
    let mut k = reach(State::PendingMatch);
    let t = k.now + minutes(1);
    let deadline = policy.deadline(&k.c.sla_key(Some("F-EXP")), Urgency::Urgent, t);
    assert_eq!(deadline, t + minutes(10));
    k.try_run_at(
        t,
        &system(),
        Command::Offer {
            to: offeree("E1"),
            deadline,
        },
    )
    .unwrap();

    // Nine minutes in: wait.
    let step = on_deadline(&k.c, t + minutes(9), &candidates(), &policy);
    assert_eq!(
        step,
        NextStep::Wait {
            until: t + minutes(10)
        }
    );
    assert_eq!(step.command(), None);

    // Ten minutes, no answer: the next candidate (E1 was offered already).
    let at = t + minutes(10);
    let step = on_deadline(&k.c, at, &candidates(), &policy);
    assert_eq!(
        step,
        NextStep::ReOffer {
            to: offeree("E2"),
            deadline: at + minutes(10)
        }
    );
    carry_out(&mut k, &step, at);
    assert_eq!(k.c.state(), State::Offered);
    assert!(matches!(
        k.c.attempts()[0].outcome,
        Some(AttemptOutcome::Expired { .. })
    ));

    // Two failed offers: fan out to the rest of the pool.
    let at = t + minutes(20);
    let step = on_deadline(&k.c, at, &candidates(), &policy);
    let pool: Vec<Offeree> = ["E3", "E4", "E5"].map(offeree).to_vec();
    assert_eq!(
        step,
        NextStep::FanOut {
            pool,
            deadline: at + minutes(10)
        }
    );
    carry_out(&mut k, &step, at);
    assert!(k.c.current_attempt().unwrap().fan_out);

    // Three failed offers (K = 3): escalate to the duty coordinator, once.
    let at = t + minutes(30);
    let step = on_deadline(&k.c, at, &candidates(), &policy);
    assert_eq!(
        step,
        NextStep::Escalate {
            to: "duty-coordinator".into(),
            failed_offers: 3
        }
    );
    carry_out(&mut k, &step, at);
    assert_eq!(
        k.c.current_attempt().unwrap().escalated_to.as_deref(),
        Some("duty-coordinator")
    );
    assert_eq!(
        on_deadline(&k.c, at + minutes(5), &candidates(), &policy),
        NextStep::Idle
    );

    // Every step is an event by the system, on the timeline.
    let sweep: Vec<String> =
        k.c.timeline()
            .into_iter()
            .filter(|e| e.actor == system() && e.at >= t)
            .map(|e| e.event)
            .collect();
    assert_eq!(
        sweep,
        [
            "offered",
            "offer_expired",
            "offered",
            "offer_expired",
            "offered",
            "escalated"
        ]
    );
    // The coordinator may still offer by hand (the deadline has passed).
    k.try_run_at(
        at + minutes(6),
        &coordinator(),
        Command::Offer {
            to: offeree("E9"),
            deadline: at + minutes(20),
        },
    )
    .unwrap();
    assert_eq!(k.c.attempts().len(), 4);
}

#[test]
fn k_is_configurable() {
    let mut policy = SlaPolicy::default();
    policy.default.escalate_after = 1;
    policy.default.escalate_to = "dept-head-cardiology".into();
    let mut k = reach(State::PendingMatch);
    let t = k.now + minutes(1);
    let deadline = policy.deadline(&k.c.sla_key(Some("F-EXP")), Urgency::Urgent, t);
    k.try_run_at(
        t,
        &system(),
        Command::Offer {
            to: offeree("E1"),
            deadline,
        },
    )
    .unwrap();
    assert_eq!(
        on_deadline(&k.c, deadline, &candidates(), &policy),
        NextStep::Escalate {
            to: "dept-head-cardiology".into(),
            failed_offers: 1
        }
    );
}

fn overridden() -> SlaPolicy {
    let json = r#"{
        "overrides": [
            {"scope": {"kind": "facility_pair", "requesting": "F-REQ", "expert": "F-OTHER"},
             "urgent_minutes": 3},
            {"scope": {"kind": "agreement", "id": "AG-1"}, "urgent_minutes": 5},
            {"scope": {"kind": "province", "code": "44"}, "urgent_minutes": 30,
             "routine_minutes": 600, "escalate_after": 4}
        ]
    }"#;
    let policy: SlaPolicy = serde_json::from_str(json).unwrap();
    policy.validate().unwrap();
    policy
}

#[test]
fn the_most_specific_override_wins_field_by_field() {
    let policy = overridden();
    let key = |agreement: Option<&'static str>, expert: Option<&'static str>| SlaKey {
        province: Some("44"),
        agreement,
        requesting_facility: "F-REQ",
        expert_facility: expert,
    };
    // Agreement over province; the province's other fields still apply.
    let rule = policy.resolve(&key(Some("AG-1"), Some("F-EXP")));
    assert_eq!(
        (
            rule.urgent_minutes,
            rule.routine_minutes,
            rule.escalate_after
        ),
        (5, 600, 4)
    );
    assert_eq!(rule.critical_minutes, 10);
    // Facility pair over agreement.
    assert_eq!(
        policy
            .resolve(&key(Some("AG-1"), Some("F-OTHER")))
            .urgent_minutes,
        3
    );
    // Province alone.
    assert_eq!(policy.resolve(&key(None, Some("F-EXP"))).urgent_minutes, 30);
    // Nothing matches: the defaults.
    let elsewhere = SlaKey {
        province: Some("11"),
        agreement: None,
        requesting_facility: "F-X",
        expert_facility: None,
    };
    assert_eq!(policy.resolve(&elsewhere), SlaRule::default());
}

#[test]
fn a_per_agreement_override_drives_the_re_offer() {
    let policy = overridden();
    let mut k = reach(State::PendingMatch); // agreement AG-1, province 44, urgent
    let t = k.now + minutes(1);
    let deadline = policy.deadline(&k.c.sla_key(Some("F-EXP")), Urgency::Urgent, t);
    assert_eq!(deadline, t + minutes(5));
    k.try_run_at(
        t,
        &system(),
        Command::Offer {
            to: offeree("E1"),
            deadline,
        },
    )
    .unwrap();
    assert!(matches!(
        on_deadline(&k.c, t + minutes(4), &candidates(), &policy),
        NextStep::Wait { .. }
    ));
    let step = on_deadline(&k.c, t + minutes(5), &candidates(), &policy);
    assert_eq!(
        step,
        NextStep::ReOffer {
            to: offeree("E2"),
            deadline: t + minutes(10)
        }
    );
}

#[test]
fn default_windows_follow_the_core_rules() {
    let policy = SlaPolicy::default();
    let k = reach(State::PendingMatch);
    let key = k.c.sla_key(None);
    let t = t0();
    assert_eq!(policy.deadline(&key, Urgency::Critical, t), t + minutes(10));
    assert_eq!(policy.deadline(&key, Urgency::Urgent, t), t + minutes(10));
    assert_eq!(
        policy.deadline(&key, Urgency::Routine, t),
        t + chrono::TimeDelta::hours(24)
    );
}

#[test]
fn a_rejection_moves_to_the_next_candidate_at_once() {
    let policy = SlaPolicy::default();
    let k = reach(State::Declined);
    let step = on_deadline(&k.c, k.now, &candidates(), &policy);
    assert_eq!(
        step,
        NextStep::ReOffer {
            to: offeree("E2"),
            deadline: k.now + minutes(10)
        }
    );
    // Nobody left: escalate.
    let step = on_deadline(&k.c, k.now, &[offeree("E1")], &policy);
    assert_eq!(
        step,
        NextStep::Escalate {
            to: "duty-coordinator".into(),
            failed_offers: 1
        }
    );
}

#[test]
fn an_opened_case_past_its_deadline_escalates_and_other_states_idle() {
    let policy = SlaPolicy::default();
    let k = reach(State::Reviewing);
    let deadline = k.c.current_attempt().unwrap().deadline;
    assert_eq!(
        on_deadline(&k.c, deadline - minutes(1), &candidates(), &policy),
        NextStep::Wait { until: deadline }
    );
    assert!(matches!(
        on_deadline(&k.c, deadline, &candidates(), &policy),
        NextStep::Escalate { .. }
    ));
    for state in [
        State::PendingMatch,
        State::Scheduled,
        State::InSession,
        State::Cancelled,
    ] {
        let k = reach(state);
        assert_eq!(
            on_deadline(
                &k.c,
                k.now + chrono::TimeDelta::days(2),
                &candidates(),
                &policy
            ),
            NextStep::Idle,
            "{state}"
        );
    }
}

#[test]
fn a_bad_policy_is_reported_with_paths() {
    let json = r#"{
        "default": {"critical_minutes": 0, "urgent_minutes": 10, "routine_minutes": 1440,
                    "fan_out_after": 2, "escalate_after": 3, "fan_out_size": 1,
                    "escalate_to": "duty"},
        "overrides": [
            {"scope": {"kind": "agreement", "id": "AG-1"}, "urgent_minutes": 0},
            {"scope": {"kind": "agreement", "id": "AG-1"}},
            {"scope": {"kind": "province", "code": " "}}
        ]
    }"#;
    let policy: SlaPolicy = serde_json::from_str(json).unwrap();
    let paths: Vec<String> = policy
        .validate()
        .unwrap_err()
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(
        paths,
        [
            "default.critical_minutes",
            "default.fan_out_size",
            "overrides[0].urgent_minutes",
            "overrides[1].scope",
            "overrides[2].scope"
        ]
    );
    let e = serde_json::from_str::<SlaPolicy>(r#"{"defaults": {}}"#).unwrap_err();
    assert!(e.to_string().contains("unknown field `defaults`"), "{e}");
}

#[test]
fn a_fan_out_goes_to_the_on_call_pool_first() {
    let policy = SlaPolicy::default();
    let mut k = reach(State::PendingMatch);
    let t = k.now + minutes(1);
    for (i, e) in ["E1", "E2"].into_iter().enumerate() {
        let at = t + minutes(10 * i as i64);
        k.try_run_at(
            at,
            &system(),
            Command::Offer {
                to: offeree(e),
                deadline: at + minutes(10),
            },
        )
        .unwrap();
    }
    // Two failed offers; a fresh match ranks E1 (offered before), E3 … E7; E6 and E4 are on
    // call. The pool: the on-call experts in rank order, then the best of the others.
    let at = t + minutes(20);
    let ranked = ["E1", "E3", "E4", "E5", "E6", "E7"].map(offeree);
    let on_call = ["E6".to_owned(), "E4".to_owned(), "E1".to_owned()];
    let policy3 = SlaPolicy {
        default: SlaRule {
            fan_out_size: 3,
            ..SlaRule::default()
        },
        ..policy.clone()
    };
    let step = on_deadline(
        &k.c,
        at,
        NextCandidates {
            ranked: &ranked,
            on_call: &on_call,
        },
        &policy3,
    );
    assert_eq!(
        step,
        NextStep::FanOut {
            pool: ["E4", "E6", "E3"].map(offeree).to_vec(),
            deadline: at + minutes(10)
        }
    );
    // Without anyone on call, the best candidates.
    assert_eq!(
        on_deadline(&k.c, at, &ranked, &policy3),
        NextStep::FanOut {
            pool: ["E3", "E4", "E5"].map(offeree).to_vec(),
            deadline: at + minutes(10)
        }
    );
}

#[test]
fn a_fresh_match_is_needed_only_for_a_re_offer_or_a_fan_out() {
    let policy = SlaPolicy::default();
    let mut k = reach(State::PendingMatch);
    assert!(!needs_candidates(&k.c, k.now, &policy), "no attempt yet");
    let t = k.now;
    k.try_run_at(
        t,
        &system(),
        Command::Offer {
            to: offeree("E1"),
            deadline: t + minutes(10),
        },
    )
    .unwrap();
    assert!(!needs_candidates(&k.c, t + minutes(9), &policy), "open");
    assert!(needs_candidates(&k.c, t + minutes(10), &policy), "passed");
    // A decline needs the next candidate at once.
    k.try_run_at(
        t + minutes(1),
        &expert("E1"),
        Command::Reject {
            reason: "手术中".into(),
        },
    )
    .unwrap();
    assert!(needs_candidates(&k.c, t + minutes(1), &policy));
    // Opened cases and escalations do not; nor does the attempt that reaches escalate_after.
    let mut k = reach(State::Reviewing);
    assert!(!needs_candidates(&k.c, k.now + minutes(60), &policy));
    let at = k.now;
    k.try_run_at(at, &coordinator(), Command::Escalate { to: "duty".into() })
        .unwrap();
    assert!(!needs_candidates(&k.c, at + minutes(60), &policy));
    let mut k = reach(State::PendingMatch);
    let t = k.now;
    for i in 0..3 {
        let at = t + minutes(10 * i);
        k.try_run_at(
            at,
            &system(),
            Command::Offer {
                to: offeree(["E1", "E2", "E3"][i as usize]),
                deadline: at + minutes(10),
            },
        )
        .unwrap();
    }
    assert!(!needs_candidates(&k.c, t + minutes(30), &policy));
    assert!(matches!(
        on_deadline(&k.c, t + minutes(30), &candidates(), &policy),
        NextStep::Escalate { .. }
    ));
}
