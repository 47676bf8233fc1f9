//! The rules around the edges: reasons (422), versions and the acceptance race (412), roles
//! and persons (403), creation data, merges, the timeline, JSON and replay.

use huizhen_domain::consultation::*;

use crate::support::*;

#[test]
fn reject_cancel_and_fail_need_a_reason() {
    for blank in ["", "   "] {
        let cases = [
            (
                State::Offered,
                expert("E1"),
                Command::Reject {
                    reason: blank.into(),
                },
            ),
            (
                State::Drafting,
                local_doctor(),
                Command::Cancel {
                    reason: blank.into(),
                },
            ),
            (
                State::InSession,
                system(),
                Command::Fail {
                    code: FailReason::TechnicalFailure,
                    reason: blank.into(),
                },
            ),
        ];
        for (state, actor, command) in cases {
            let mut k = reach(state);
            let action = command.action();
            let e = k.try_run(&actor, command).unwrap_err();
            assert_eq!(e, ConsultError::MissingReason { action });
            assert_eq!(e.status(), 422);
            assert_eq!(e.to_string(), format!("{action} needs a reason"));
            assert_eq!(k.c.state(), state);
        }
    }
}

#[test]
fn the_reason_is_kept_on_the_event_and_as_status_reason() {
    let mut k = reach(State::Offered);
    let events = k
        .run(
            &expert("E1"),
            Command::Reject {
                reason: "outside my subspecialty".into(),
            },
        )
        .events
        .clone();
    let last = events.last().unwrap();
    assert_eq!(last.reason.as_deref(), Some("outside my subspecialty"));
    assert_eq!(k.c.status_reason(), Some("outside my subspecialty"));
    let attempt = &k.c.attempts()[0];
    assert_eq!(
        attempt.declines[0].reason.as_deref(),
        Some("outside my subspecialty")
    );
    assert_eq!(
        attempt.outcome,
        Some(AttemptOutcome::Declined { at: last.at })
    );
}

#[test]
fn accept_with_a_stale_version_is_a_conflict() {
    let mut k = reach(State::Offered);
    let stale = k.c.version() - 1;
    let e = k
        .try_run(
            &expert("E1"),
            Command::Accept {
                expected_version: stale,
            },
        )
        .unwrap_err();
    assert_eq!(
        e,
        ConsultError::VersionConflict {
            expected: stale,
            actual: stale + 1
        }
    );
    assert_eq!(e.status(), 412);
}

#[test]
fn fifty_experts_accept_a_fan_out_and_exactly_one_wins() {
    let mut k = reach(State::PendingMatch);
    let pool: Vec<Offeree> = (0..50).map(|i| offeree(&format!("X{i:02}"))).collect();
    let deadline = k.now + minutes(10);
    k.run(&system(), Command::FanOut { pool, deadline });
    let seen = k.c.version();
    let mut winners = Vec::new();
    let mut taken = 0;
    for i in 0..50 {
        let who = format!("X{i:02}");
        match k.try_run(
            &expert(&who),
            Command::Accept {
                expected_version: seen,
            },
        ) {
            Ok(_) => winners.push(who),
            Err(ConsultError::Taken { by }) => {
                assert_eq!(by, "X00");
                taken += 1;
            }
            Err(other) => panic!("{who}: {other}"),
        }
    }
    assert_eq!(winners, ["X00"]);
    assert_eq!(taken, 49);
    assert_eq!(k.c.accepted_by(), Some("X00"));
    let e = ConsultError::Taken { by: "X00".into() };
    assert_eq!(
        (e.status(), e.to_string().as_str()),
        (412, "the case is taken: accepted by X00")
    );
}

#[test]
fn concurrent_deciders_on_one_snapshot_get_the_same_version_so_the_store_keeps_one() {
    // Two experts decide against the same snapshot before either is stored: both get an event
    // with the same version, which the store's unique (consultation, version) key admits once.
    let k = reach(State::PendingMatch);
    let mut k = k;
    let deadline = k.now + minutes(10);
    k.run(
        &system(),
        Command::FanOut {
            pool: vec![offeree("E1"), offeree("E2")],
            deadline,
        },
    );
    let v = k.c.version();
    let at = k.now + minutes(1);
    let (a, b) = (expert("E1"), expert("E2"));
    let ea = decide(
        &k.c,
        &Command::Accept {
            expected_version: v,
        },
        &Context::new(at, &a),
    )
    .unwrap();
    let eb = decide(
        &k.c,
        &Command::Accept {
            expected_version: v,
        },
        &Context::new(at, &b),
    )
    .unwrap();
    assert_eq!(ea[0].version, v + 1);
    assert_eq!(eb[0].version, v + 1);
    // The store appends E1's; E2 retries against the new state and is told the case is taken.
    let after = apply(k.c.clone(), &ea[0]);
    let retry = decide(
        &after,
        &Command::Accept {
            expected_version: v,
        },
        &Context::new(at, &b),
    );
    assert_eq!(retry.unwrap_err(), ConsultError::Taken { by: "E1".into() });
}

#[test]
fn a_fan_out_is_declined_only_when_everyone_declined() {
    let mut k = reach(State::PendingMatch);
    let deadline = k.now + minutes(10);
    k.run(
        &system(),
        Command::FanOut {
            pool: vec![offeree("E1"), offeree("E2")],
            deadline,
        },
    );
    k.run(
        &expert("E1"),
        Command::Reject {
            reason: "busy".into(),
        },
    );
    assert_eq!(k.c.state(), State::Offered);
    let e = k
        .try_run(
            &expert("E1"),
            Command::Accept {
                expected_version: k.c.version(),
            },
        )
        .unwrap_err();
    assert!(matches!(e, ConsultError::NotAssigned { .. }), "{e}");
    k.run(
        &expert("E2"),
        Command::Reject {
            reason: "on leave".into(),
        },
    );
    assert_eq!(k.c.state(), State::Declined);
}

#[test]
fn a_coordinator_declines_the_whole_attempt() {
    let mut k = reach(State::Reviewing);
    k.run(
        &coordinator(),
        Command::Reject {
            reason: "wrong department".into(),
        },
    );
    assert_eq!(k.c.state(), State::Declined);
    assert_eq!(k.c.attempts()[0].declines[0].expert, None);
}

#[test]
fn a_rejection_spawns_a_new_attempt_in_the_same_group() {
    let mut k = reach(State::Declined);
    let deadline = k.now + minutes(10);
    k.run(
        &system(),
        Command::Offer {
            to: offeree("E2"),
            deadline,
        },
    );
    assert_eq!(k.c.state(), State::Offered);
    let numbers: Vec<u32> = k.c.attempts().iter().map(|a| a.number).collect();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(k.c.current_attempt().unwrap().offerees, [offeree("E2")]);
    assert!(matches!(
        k.c.attempts()[0].outcome,
        Some(AttemptOutcome::Declined { .. })
    ));
    // The group is the consultation: both attempts belong to it.
    assert_eq!(k.c.id(), ID);
}

#[test]
fn a_re_offer_waits_for_the_deadline() {
    let mut k = reach(State::Offered);
    let deadline = k.c.current_attempt().unwrap().deadline;
    let e = k
        .try_run(
            &system(),
            Command::Offer {
                to: offeree("E2"),
                deadline: deadline + minutes(10),
            },
        )
        .unwrap_err();
    assert_eq!(e, ConsultError::OfferStillOpen { deadline });
    assert_eq!(e.status(), 409);
    k.now = deadline;
    let events = k
        .run(
            &system(),
            Command::Offer {
                to: offeree("E2"),
                deadline: deadline + minutes(10),
            },
        )
        .events
        .clone();
    let kinds: Vec<&str> = events.iter().rev().take(2).map(|e| e.kind.name()).collect();
    assert_eq!(kinds, ["offered", "offer_expired"]);
    assert!(matches!(
        k.c.attempts()[0].outcome,
        Some(AttemptOutcome::Expired { .. })
    ));
}

#[test]
fn offers_need_a_future_deadline_and_distinct_named_experts() {
    let mut k = reach(State::PendingMatch);
    let now = k.now;
    let e = k
        .try_run(
            &system(),
            Command::Offer {
                to: offeree("E1"),
                deadline: now,
            },
        )
        .unwrap_err();
    assert!(
        matches!(&e, ConsultError::Invalid { problems, .. } if problems[0].path == "deadline"),
        "{e}"
    );
    let e = k
        .try_run(
            &system(),
            Command::FanOut {
                pool: vec![
                    offeree("E1"),
                    offeree("E1"),
                    Offeree {
                        expert: "E3".into(),
                        facility: " ".into(),
                    },
                ],
                deadline: now + minutes(30),
            },
        )
        .unwrap_err();
    let ConsultError::Invalid { problems, .. } = e else {
        panic!("{e}")
    };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["pool[1].expert", "pool[2].facility"]);
}

#[test]
fn roles_and_persons() {
    // A plugin may offer, named with its version; never accept.
    let mut k = reach(State::PendingMatch);
    let plugin = Actor::new("scorer", Role::Plugin);
    let deadline = k.now + minutes(10);
    let offer = Command::Offer {
        to: offeree("E1"),
        deadline,
    };
    let e = decide(&k.c, &offer, &Context::new(k.now, &plugin)).unwrap_err();
    assert!(
        matches!(&e, ConsultError::Invalid { problems, .. } if problems[0].path == "plugin"),
        "{e}"
    );
    let scorer = PluginRef {
        name: "scorer-cardio".into(),
        version: "0.3.1".into(),
    };
    let events = decide(
        &k.c,
        &offer,
        &Context::new(k.now, &plugin).with_plugin(&scorer),
    )
    .unwrap();
    assert_eq!(events[0].plugin.as_ref(), Some(&scorer));
    k.run(&system(), offer);
    let accept = Command::Accept {
        expected_version: k.c.version(),
    };
    let ctx = Context::new(k.now, &plugin).with_plugin(&scorer);
    let e = decide(&k.c, &accept, &ctx).unwrap_err();
    assert_eq!(
        e,
        ConsultError::RoleNotAllowed {
            action: "accept",
            role: Role::Plugin
        }
    );
    assert_eq!(e.status(), 403);
    // An expert not offered may not open.
    let e = k.try_run(&expert("E9"), Command::Open).unwrap_err();
    assert!(
        matches!(e, ConsultError::NotAssigned { .. }) && e.status() == 403,
        "{e}"
    );
    // After acceptance, only the accepted expert signs.
    let mut k = reach(State::InSession);
    let signed = signed_opinion(ID, "E2", k.now);
    let e = k
        .try_run(&expert("E2"), Command::SignOpinion { signed })
        .unwrap_err();
    assert!(matches!(e, ConsultError::NotAssigned { .. }), "{e}");
    // The local decision is the requesting doctor's or the attached physician's, not an expert's.
    let signed = signed_opinion(ID, "E1", k.now);
    k.run(&expert("E1"), Command::SignOpinion { signed });
    let e = k
        .try_run(
            &expert("E1"),
            Command::RecordLocalDecision {
                decision: decision(),
            },
        )
        .unwrap_err();
    assert_eq!(
        e,
        ConsultError::RoleNotAllowed {
            action: "record_local_decision",
            role: Role::Expert
        }
    );
    let other = Actor::new("dr-zhao", Role::LocalDoctor);
    let e = k
        .try_run(
            &other,
            Command::RecordLocalDecision {
                decision: decision(),
            },
        )
        .unwrap_err();
    assert!(matches!(e, ConsultError::NotAssigned { .. }), "{e}");
    let physician = Actor::new(LOCAL_PHYSICIAN, Role::LocalDoctor);
    k.run(
        &physician,
        Command::RecordLocalDecision {
            decision: decision(),
        },
    );
    assert_eq!(k.c.local_decision().unwrap().by, LOCAL_PHYSICIAN);
}

#[test]
fn completion_needs_the_signed_opinion_and_the_local_decision() {
    let mut k = reach(State::ReportPending);
    let e = k.try_run(&local_doctor(), Command::Complete).unwrap_err();
    assert_eq!(
        e,
        ConsultError::Missing {
            action: Action::Complete,
            missing: vec![Requirement::SignedOpinion, Requirement::LocalDecision]
        }
    );
    assert_eq!(
        e.to_string(),
        "cannot complete: no signed expert opinion recorded (CN-07, CN-21); no local doctor's \
         decision recorded (CN-07)"
    );
    let e = k
        .try_run(
            &local_doctor(),
            Command::RecordLocalDecision {
                decision: decision(),
            },
        )
        .unwrap_err();
    assert_eq!(
        e,
        ConsultError::Missing {
            action: Action::RecordLocalDecision,
            missing: vec![Requirement::SignedOpinion]
        }
    );
    let signed = signed_opinion(ID, "E1", k.now);
    k.run(&expert("E1"), Command::SignOpinion { signed });
    let e = k.try_run(&local_doctor(), Command::Complete).unwrap_err();
    assert!(
        matches!(&e, ConsultError::Missing { missing, .. } if missing == &[Requirement::LocalDecision])
    );
    let not_adopted = LocalDecision {
        outcome: DecisionOutcome::NotAdopted,
        final_diagnoses: vec![],
        note: " ".into(),
    };
    let e = k
        .try_run(
            &local_doctor(),
            Command::RecordLocalDecision {
                decision: not_adopted,
            },
        )
        .unwrap_err();
    assert!(
        matches!(&e, ConsultError::Invalid { problems, .. } if problems[0].path == "decision.note"),
        "{e}"
    );
    k.run(
        &local_doctor(),
        Command::RecordLocalDecision {
            decision: decision(),
        },
    );
    k.run(&local_doctor(), Command::Complete);
    assert_eq!(k.c.state(), State::ReportSigned);
    // The opinion is the expert's act and the decision the local doctor's (CN-07).
    let by = |name: &str| {
        k.c.timeline()
            .into_iter()
            .find(|t| t.event == name)
            .map(|t| t.actor.id)
            .unwrap()
    };
    assert_eq!(by("opinion_signed"), "E1");
    assert_eq!(by("local_decision_recorded"), REQUESTING_DOCTOR);
}

#[test]
fn a_merge_re_points_the_patient_and_is_on_the_timeline() {
    let mut k = reach(State::InSession);
    k.run(
        &system(),
        Command::RepointPatient {
            from: PATIENT,
            to: 5000,
        },
    );
    assert_eq!(k.c.patient(), 5000);
    assert_eq!(k.c.request().patient, 5000);
    let last = k.c.timeline().pop().unwrap();
    assert_eq!(
        (last.event.as_str(), last.actor.id.as_str()),
        ("patient_repointed", "engine")
    );
    assert_eq!((last.from, last.to), (State::InSession, State::InSession));
    let e = k
        .try_run(
            &system(),
            Command::RepointPatient {
                from: PATIENT,
                to: 6000,
            },
        )
        .unwrap_err();
    assert_eq!(
        e,
        ConsultError::PatientMismatch {
            current: 5000,
            from: PATIENT
        }
    );
    let e = k
        .try_run(
            &system(),
            Command::RepointPatient {
                from: 5000,
                to: 5000,
            },
        )
        .unwrap_err();
    assert!(matches!(e, ConsultError::Invalid { .. }), "{e}");
    let e = k
        .try_run(
            &local_doctor(),
            Command::RepointPatient {
                from: 5000,
                to: 6000,
            },
        )
        .unwrap_err();
    assert!(matches!(e, ConsultError::RoleNotAllowed { .. }), "{e}");
    let mut done = reach(State::ReportSigned);
    let e = done
        .try_run(
            &system(),
            Command::RepointPatient {
                from: PATIENT,
                to: 5000,
            },
        )
        .unwrap_err();
    assert!(matches!(e, ConsultError::InvalidTransition { .. }), "{e}");
}

#[test]
fn creation_validates_with_field_paths() {
    let mut r = request();
    r.reason = " ".into();
    r.agreement = None;
    r.attachments.studies.push("1.2.03".into());
    r.attachments.reports.push(String::new());
    r.requested_time = RequestedTime::Window {
        from: t0(),
        to: t0(),
    };
    r.triage.as_mut().unwrap().plugin.version = String::new();
    let actor = local_doctor();
    let e = Consultation::create(ID, r, &Context::new(t0(), &actor)).unwrap_err();
    assert_eq!(e.status(), 422);
    let ConsultError::Request(problems) = &e else {
        panic!("{e}")
    };
    assert_eq!(
        problems.paths(),
        [
            "reason",
            "attachments.reports[1]",
            "triage.plugin.version",
            "requested_time.to",
            "attachments.studies[1]",
            "agreement"
        ]
    );
    assert!(
        e.to_string()
            .contains("agreement: is required for institution-to-institution"),
        "{e}"
    );
    // Direct-to-patient needs no agreement.
    let mut r = request();
    r.agreement = None;
    r.service_type = ServiceType::DirectToPatient;
    assert!(Consultation::create(ID, r, &Context::new(t0(), &actor)).is_ok());
    // A local doctor asks as themself; a coordinator and the engine on a doctor's behalf.
    let other = Actor::new("dr-zhao", Role::LocalDoctor);
    let e = Consultation::create(ID, request(), &Context::new(t0(), &other)).unwrap_err();
    assert_eq!(
        e,
        ConsultError::NotRequestingDoctor {
            actor: "dr-zhao".into(),
            doctor: REQUESTING_DOCTOR.into()
        }
    );
    assert_eq!((e.status(), e.code()), (403, "not-requesting-doctor"));
    assert!(
        e.to_string()
            .contains("a local doctor requests as themself (requesting_doctor must be dr-zhao)"),
        "{e}"
    );
    for on_behalf in [coordinator(), system()] {
        assert!(Consultation::create(ID, request(), &Context::new(t0(), &on_behalf)).is_ok());
    }
    // Only doctors, coordinators and the engine create.
    let e = Consultation::create(ID, request(), &Context::new(t0(), &expert("E1"))).unwrap_err();
    assert_eq!(
        e,
        ConsultError::RoleNotAllowed {
            action: "create",
            role: Role::Expert
        }
    );
}

#[test]
fn the_request_refuses_unknown_fields() {
    let mut json = serde_json::to_value(request()).unwrap();
    json["ethnicity"] = "汉".into();
    let e = serde_json::from_value::<ConsultationRequest>(json).unwrap_err();
    assert!(e.to_string().contains("unknown field `ethnicity`"), "{e}");
}

#[test]
fn one_urgency_for_the_request_matching_and_appointments() {
    // The same type everywhere: what the request says is what matching and a booking get.
    let _: huizhen_domain::expert::Urgency = Urgency::Critical;
    let _: huizhen_domain::appointment::Urgency = Urgency::Critical;
    for urgency in Urgency::ALL {
        let r = ConsultationRequest {
            urgency,
            ..request()
        };
        let case = r.case_request(ID);
        assert_eq!(case.urgency, urgency);
        // Matching treats critical as urgent (急会诊), as it always did.
        assert_eq!(case.urgency.is_urgent(), urgency != Urgency::Routine);
    }
    let case = request().case_request(ID);
    assert_eq!(case.exclude_experts, [REQUESTING_DOCTOR]);
    assert!(case.require_external);
    assert!(case.validate().is_ok());
}

#[test]
fn the_timeline_and_the_match_21_timestamps() {
    let k = reach(State::ReportSigned);
    let m = k.c.milestones();
    let at = |name: &str| {
        k.c.timeline()
            .into_iter()
            .find(|t| t.event == name)
            .unwrap()
            .at
    };
    assert_eq!(m.created, Some(t0()));
    assert_eq!(m.local_approval, Some(at("approved")));
    assert_eq!(m.offered, Some(at("offered")));
    assert_eq!(m.opened, Some(at("opened")));
    assert_eq!(m.accepted, Some(at("accepted")));
    assert_eq!(m.joined, Some(at("started")));
    assert_eq!(m.report_signed, Some(at("opinion_signed")));
    assert_eq!(m.request_to_accept(), Some(at("accepted") - t0()));
    let timeline = k.c.timeline();
    assert_eq!(timeline.len() as u64, k.c.version());
    let transitions: Vec<(State, State)> = timeline
        .iter()
        .filter(|t| t.from != t.to)
        .map(|t| (t.from, t.to))
        .collect();
    assert_eq!(
        transitions,
        [
            (State::Drafting, State::PendingLocalApproval),
            (State::PendingLocalApproval, State::PendingMatch),
            (State::PendingMatch, State::Offered),
            (State::Offered, State::Reviewing),
            (State::Reviewing, State::Scheduled),
            (State::Scheduled, State::InSession),
            (State::InSession, State::ReportSigned),
        ]
    );
    assert_eq!(k.c.last_modified(), timeline.last().unwrap().at);
}

#[test]
fn events_are_flat_json_tagged_by_type_and_replay() {
    let k = reach(State::ReportSigned);
    let json: Vec<serde_json::Value> = k
        .events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    assert_eq!(json[0]["type"], "created");
    assert_eq!(json[0]["version"], 1);
    assert_eq!(json[0]["actor"]["role"], "local-doctor");
    let offered = json.iter().find(|j| j["type"] == "offered").unwrap();
    assert_eq!(offered["offerees"][0]["expert"], "E1");
    assert_eq!(offered["attempt"], 1);
    let back: Vec<Event> = json
        .into_iter()
        .map(|j| serde_json::from_value(j).unwrap())
        .collect();
    assert_eq!(back, k.events);
    assert_eq!(Consultation::replay(&back).unwrap(), k.c);
}

#[test]
fn replay_refuses_gaps_and_a_missing_creation() {
    let k = reach(State::Offered);
    assert_eq!(Consultation::replay(&[]), Err(ReplayError::Empty));
    assert!(matches!(
        Consultation::replay(&k.events[1..]),
        Err(ReplayError::NotCreated { version: 2, .. })
    ));
    let mut gap = k.events.clone();
    gap.remove(3);
    assert_eq!(
        Consultation::replay(&gap),
        Err(ReplayError::Gap {
            index: 3,
            expected: 4,
            found: 5
        })
    );
}
