//! Imaging studies attached to a consultation (DCM-07): who may attach, in which states, the
//! fold (a study attached again with the same counts adds nothing; one that grew keeps how it
//! joined), the timeline, and the notice to the expert who has the case.

use chrono::FixedOffset;
use huizhen_domain::consultation::{
    Announcement, AttachedStudy, Command, ConsultError, Context, KnownPatient, State, StudyMatch,
    announcements, apply, attach_study, outbound,
};

use crate::support::*;

fn study(uid: &str, instances: u64, matched_by: StudyMatch, prior: bool) -> AttachedStudy {
    AttachedStudy {
        study_uid: uid.into(),
        facility: "F-REQ".into(),
        accession: Some("ACC-1".into()),
        modalities: vec!["CT".into()],
        description: Some("胸部CT平扫".into()),
        study_date: Some("20260110".into()),
        series_count: 1,
        instance_count: instances,
        matched_by,
        prior,
    }
}

/// Attaches `s` as `actor`; the events (folded into the case).
fn attach(
    k: &mut Case,
    actor: &huizhen_domain::consultation::Actor,
    s: &AttachedStudy,
) -> Result<usize, ConsultError> {
    let ctx = Context::new(k.now, actor);
    let events = attach_study(&k.c, s, &ctx)?;
    for e in &events {
        k.c = apply(k.c.clone(), e);
        k.events.push(e.clone());
    }
    Ok(events.len())
}

#[test]
fn a_study_is_attached_once_and_again_only_when_it_grew() {
    let mut k = reach(State::Offered);
    let v = k.c.version();
    let s = study("1.2.3.4", 10, StudyMatch::Patient, true);
    assert_eq!(attach(&mut k, &system(), &s).unwrap(), 1);
    assert_eq!(k.c.version(), v + 1);
    assert_eq!(k.c.state(), State::Offered);
    assert_eq!(k.c.studies(), std::slice::from_ref(&s));
    // The sweep's completion of the same study, matched otherwise: nothing new.
    let again = study("1.2.3.4", 10, StudyMatch::Accession, false);
    assert_eq!(attach(&mut k, &system(), &again).unwrap(), 0);
    // A late series: attached again with the new counts, still a prior matched by patient.
    let grown = study("1.2.3.4", 12, StudyMatch::Accession, false);
    assert_eq!(attach(&mut k, &system(), &grown).unwrap(), 1);
    assert_eq!(k.c.studies().len(), 1);
    assert_eq!(k.c.studies()[0].instance_count, 12);
    assert_eq!(k.c.studies()[0].matched_by, StudyMatch::Patient);
    assert!(k.c.studies()[0].prior);
    let second = study("1.2.3.5", 3, StudyMatch::Accession, false);
    attach(&mut k, &local_doctor(), &second).unwrap();
    assert_eq!(k.c.studies().len(), 2);
    let timeline = k.c.timeline();
    assert_eq!(
        timeline
            .iter()
            .filter(|e| e.event == "study_attached")
            .count(),
        3
    );
    // The fold is the replay of the events.
    let replayed = huizhen_domain::consultation::Consultation::replay(&k.events).unwrap();
    assert_eq!(replayed, k.c);
    // JSON round trip of the event.
    let last = k.events.last().unwrap();
    let json = serde_json::to_string(last).unwrap();
    assert!(json.contains("\"type\":\"study_attached\""), "{json}");
    assert_eq!(
        &serde_json::from_str::<huizhen_domain::consultation::Event>(&json).unwrap(),
        last
    );
}

#[test]
fn experts_plugins_bad_uids_and_ended_consultations_are_refused() {
    let mut k = reach(State::Offered);
    let s = study("1.2.3.4", 1, StudyMatch::Manual, false);
    assert!(matches!(
        attach(&mut k, &expert("E1"), &s),
        Err(ConsultError::RoleNotAllowed { .. })
    ));
    for bad in ["", "1.2.x", "1..2", "1.02"] {
        let s = study(bad, 1, StudyMatch::Manual, false);
        let e = attach(&mut k, &coordinator(), &s).unwrap_err();
        assert!(e.to_string().contains("study_uid"), "{bad}: {e}");
    }
    let mut blank = study("1.2.3", 1, StudyMatch::Manual, false);
    blank.facility = " ".into();
    assert!(
        attach(&mut k, &coordinator(), &blank)
            .unwrap_err()
            .to_string()
            .contains("facility")
    );
    k.run(
        &local_doctor(),
        Command::Cancel {
            reason: "患者转院".into(),
        },
    );
    let e = attach(&mut k, &system(), &s).unwrap_err();
    assert!(e.to_string().contains("cancelled"), "{e}");
}

#[test]
fn the_expert_who_has_the_case_is_told() {
    let known = KnownPatient::default();
    let ctx = outbound::OutboundContext {
        patient: &known,
        expert_name: None,
        offset: FixedOffset::east_opt(8 * 3600).unwrap(),
    };
    // Before any offer: nobody to tell.
    let mut k = reach(State::PendingMatch);
    attach(
        &mut k,
        &system(),
        &study("1.2.3.4", 1, StudyMatch::Patient, true),
    )
    .unwrap();
    let last = &k.events[k.events.len() - 1..];
    assert!(outbound::announces(last));
    assert!(announcements(&k.c, last, &ctx).is_empty());
    // Offered to E1: E1 is told which study, without patient data.
    let mut k = reach(State::Offered);
    let expert_id = k.c.current_attempt().unwrap().offerees[0].expert.clone();
    attach(
        &mut k,
        &system(),
        &study("1.2.3.9", 1, StudyMatch::Accession, false),
    )
    .unwrap();
    let last = &k.events[k.events.len() - 1..];
    let a = announcements(&k.c, last, &ctx);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].topic(), outbound::STUDY_ATTACHED);
    let Announcement::Notice(n) = &a[0] else {
        panic!("{a:?}")
    };
    assert_eq!(n.expert.as_deref(), Some(expert_id.as_str()));
    assert_eq!(n.study.as_deref(), Some("1.2.3.9"));
    assert_eq!(n.event, "study_attached");
}
