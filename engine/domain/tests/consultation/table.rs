//! Every state × every action against the hand-written FHIR-10 table in support.rs.

use huizhen_domain::consultation::*;

use crate::support::*;

/// The command and actor that exercise `action` on `k` when its guards can pass.
fn canonical(action: Action, k: &Case) -> (Actor, Command) {
    let later = k.now + minutes(10);
    let at = k.now;
    match action {
        Action::Submit => (local_doctor(), Command::Submit),
        Action::Approve => (coordinator(), Command::Approve),
        Action::Offer => (
            system(),
            Command::Offer {
                to: offeree("E2"),
                deadline: later,
            },
        ),
        Action::FanOut => (
            system(),
            Command::FanOut {
                pool: vec![offeree("E2"), offeree("E3")],
                deadline: later,
            },
        ),
        Action::Open => (expert("E1"), Command::Open),
        Action::Accept => (
            expert("E1"),
            Command::Accept {
                expected_version: k.c.version(),
            },
        ),
        Action::Reject => (
            expert("E1"),
            Command::Reject {
                reason: "no capacity today".into(),
            },
        ),
        Action::Escalate => (
            system(),
            Command::Escalate {
                to: "duty-coordinator".into(),
            },
        ),
        Action::Schedule => (
            local_doctor(),
            Command::Schedule {
                appointment: Appointment {
                    start: later,
                    end: later + minutes(30),
                    reference: None,
                },
            },
        ),
        Action::RecordConsent => (
            local_doctor(),
            Command::RecordConsent {
                consent: Consent {
                    signer: ConsentSigner::Guardian,
                    document: "DocumentReference/consent-2".into(),
                    signed_at: at,
                    not_suitable_to_inform_patient: true,
                },
            },
        ),
        Action::RecordRecordingConsent => (
            local_doctor(),
            Command::RecordRecordingConsent {
                consent: RecordingConsent {
                    role: room::RoomRole::Patient,
                    participant: PATIENT.to_string(),
                    document: "DocumentReference/recording-consent".into(),
                    signed_at: at,
                    withdrawn: false,
                },
            },
        ),
        Action::AttachPhysician => (
            local_doctor(),
            Command::AttachPhysician {
                physician: LocalPhysician {
                    practitioner: LOCAL_PHYSICIAN.into(),
                    licence: "110440000012345".into(),
                },
            },
        ),
        Action::RecordVerification => (system(), verification(Subject::Patient, at)),
        Action::RecordPriorDiagnosis => (
            local_doctor(),
            Command::RecordPriorDiagnosis {
                evidence: PriorDiagnosis {
                    code: "I10".parse().expect("a code"),
                    kind: EvidenceKind::OutpatientRecord,
                    document: "DocumentReference/op-1".into(),
                },
            },
        ),
        Action::Start => (local_doctor(), Command::Start),
        Action::Pause => (local_doctor(), Command::Pause),
        Action::Resume => (local_doctor(), Command::Resume),
        Action::RequestReport => (local_doctor(), Command::RequestReport),
        Action::SignOpinion => (
            expert("E1"),
            Command::SignOpinion {
                signed: signed_opinion(ID, "E1", at),
            },
        ),
        Action::RecordLocalDecision => (
            local_doctor(),
            Command::RecordLocalDecision {
                decision: decision(),
            },
        ),
        Action::Complete => (local_doctor(), Command::Complete),
        Action::Cancel => (
            local_doctor(),
            Command::Cancel {
                reason: "patient transferred".into(),
            },
        ),
        Action::Fail => (
            system(),
            Command::Fail {
                code: fail_codes(k.c.state())
                    .first()
                    .copied()
                    .unwrap_or(FailReason::TechnicalFailure),
                reason: "the fixture fails it".into(),
            },
        ),
        Action::MarkEnteredInError => (coordinator(), Command::MarkEnteredInError),
        Action::RepointPatient => (
            system(),
            Command::RepointPatient {
                from: k.c.patient(),
                to: 9999,
            },
        ),
    }
}

/// Where the table says the command leads, as a state.
fn target(state: State, to: &str, command: &Command) -> State {
    match (to, command) {
        ("=", _) => state,
        ("failed", Command::Fail { code, .. }) => State::Failed(*code),
        (code, _) => State::from_code(code).unwrap_or_else(|| panic!("`{code}` in the table")),
    }
}

/// Completion needs the signed opinion and the decision; the local decision needs the opinion.
/// These prerequisites are themselves allowed in the states where the table allows the action.
fn prepare(action: Action, k: &mut Case) {
    if matches!(action, Action::RecordLocalDecision | Action::Complete) {
        let signed = signed_opinion(ID, "E1", k.now);
        k.run(&expert("E1"), Command::SignOpinion { signed });
    }
    if action == Action::Complete {
        k.run(
            &local_doctor(),
            Command::RecordLocalDecision {
                decision: decision(),
            },
        );
    }
}

#[test]
fn every_state_and_every_action_follow_fhir_10() {
    let mut allowed_cells = 0;
    let mut refused_cells = 0;
    for state in State::ALL {
        let fixture = reach(state);
        for action in Action::ALL {
            let mut k = fixture.clone();
            // A day later: every offer made on the way has expired, so a re-offer is due.
            k.now += chrono::TimeDelta::days(1);
            let expected = edge(state, action);
            if expected.is_some() {
                prepare(action, &mut k);
            }
            let (actor, command) = canonical(action, &k);
            let before = k.c.version();
            let result = k.try_run(&actor, command.clone());
            match (expected, result) {
                (Some(to), Ok(events)) => {
                    allowed_cells += 1;
                    assert_eq!(
                        k.c.state(),
                        target(state, &to, &command),
                        "{state} --{action}--> per FHIR-10"
                    );
                    assert!(!events.is_empty(), "{state} {action}: no event");
                    assert_eq!(k.c.version(), before + events.len() as u64);
                }
                (Some(_), Err(e)) => panic!("{state} --{action}--> is an edge, refused: {e}"),
                (None, Ok(_)) => panic!("{state} --{action}--> is no edge, yet it was allowed"),
                (None, Err(e)) => {
                    refused_cells += 1;
                    assert_eq!(
                        e,
                        ConsultError::InvalidTransition {
                            from: state,
                            action,
                            allowed: table_allowed(state),
                        },
                        "{state} --{action}-->"
                    );
                    assert_eq!(e.status(), 409);
                    assert_eq!(k.c.version(), before, "a refusal changes nothing");
                }
            }
        }
    }
    assert_eq!(allowed_cells + refused_cells, 16 * 25);
    // Every allowed cell of the table was exercised, and nothing else was allowed.
    assert_eq!(allowed_cells, table_cells());
}

fn table_cells() -> usize {
    State::ALL.iter().map(|s| table_allowed(*s).len()).sum()
}

#[test]
fn allowed_actions_match_the_table() {
    for state in State::ALL {
        assert_eq!(state.allowed_actions(), table_allowed(state), "{state}");
        assert_eq!(
            reach(state).c.allowed_actions(),
            table_allowed(state),
            "{state}"
        );
    }
}

#[test]
fn each_failure_code_only_where_the_table_allows_it() {
    for state in State::ALL {
        for code in FailReason::ALL {
            let mut k = reach(state);
            let result = k.try_run(
                &system(),
                Command::Fail {
                    code,
                    reason: "checking codes".into(),
                },
            );
            let allowed = fail_codes(state);
            match result {
                Ok(_) => {
                    assert!(allowed.contains(&code), "{state} failed with {code}");
                    assert_eq!(k.c.state(), State::Failed(code));
                    assert_eq!(k.c.status_reason(), Some("checking codes"));
                }
                Err(ConsultError::FailReasonNotAllowed {
                    from,
                    reason,
                    allowed: listed,
                }) => {
                    assert!(edge(state, Action::Fail).is_some());
                    assert!(!allowed.contains(&code), "{state} refused {code}");
                    assert_eq!((from, reason, listed.as_slice()), (state, code, allowed));
                }
                Err(ConsultError::InvalidTransition { .. }) => {
                    assert!(edge(state, Action::Fail).is_none(), "{state}");
                }
                Err(other) => panic!("{state} {code}: {other}"),
            }
        }
    }
}

#[test]
fn every_state_maps_to_its_fhir_task_status() {
    let expected = [
        ("drafting", "draft"),
        ("pending-local-approval", "requested"),
        ("pending-match", "requested"),
        ("offered", "requested"),
        ("reviewing", "received"),
        ("scheduled", "accepted"),
        ("in-session", "in-progress"),
        ("paused", "on-hold"),
        ("report-pending", "in-progress"),
        ("report-signed", "completed"),
        ("declined", "rejected"),
        ("cancelled", "cancelled"),
        ("sla-breached", "failed"),
        ("technical-failure", "failed"),
        ("no-show", "failed"),
        ("entered-in-error", "entered-in-error"),
    ];
    assert_eq!(expected.len(), State::ALL.len());
    for (code, status) in expected {
        let state = State::from_code(code).expect("a state code");
        assert_eq!(state.task_status().code(), status, "{code}");
    }
}
