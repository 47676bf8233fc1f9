//! The media room's admission rules (RTC-04, CN-05, CN-06): who may join, when, in which order.

use huizhen_domain::consultation::room::*;
use huizhen_domain::consultation::*;

use crate::support::*;

const NOW: u64 = 1_800_000_000;

fn claims(role: RoomRole, sub: &str) -> RoomClaims {
    RoomClaims {
        sub: sub.into(),
        consultation: ID.into(),
        room: room_id(ID),
        role,
        perms: role.default_permissions(),
        nbf: NOW - 10,
        exp: NOW + 600,
        iat: NOW - 10,
        jti: "t1".into(),
    }
}

fn patient(k: &Case) -> String {
    k.c.patient().to_string()
}

#[test]
fn the_three_participants_join_a_scheduled_or_running_consultation() {
    for state in [State::Scheduled, State::InSession] {
        let k = reach(state);
        let room = room_id(ID);
        for (role, sub) in [
            (RoomRole::Expert, "E1".to_owned()),
            (RoomRole::LocalPhysician, LOCAL_PHYSICIAN.to_owned()),
            (RoomRole::Patient, patient(&k)),
        ] {
            assert_eq!(
                may_join(&k.c, &room, &claims(role, &sub), NOW),
                Ok(()),
                "{role} in {state}"
            );
        }
        assert!(needs_local_physician(&k.c));
    }
}

#[test]
fn a_token_for_another_room_or_person_or_time_is_refused() {
    let k = reach(State::InSession);
    let room = room_id(ID);
    // Room A's token never opens room B, whatever the claims say about the consultation.
    let mut other = claims(RoomRole::Expert, "E1");
    other.room = room_id("another");
    assert!(matches!(
        may_join(&k.c, &room, &other, NOW),
        Err(Refusal::WrongRoom { .. })
    ));
    assert!(matches!(
        may_join(
            &k.c,
            &room_id("another"),
            &claims(RoomRole::Expert, "E1"),
            NOW
        ),
        Err(Refusal::WrongRoom { .. })
    ));
    // Another expert than the accepted one.
    assert_eq!(
        may_join(&k.c, &room, &claims(RoomRole::Expert, "E2"), NOW),
        Err(Refusal::NotParticipant {
            role: RoomRole::Expert
        })
    );
    // The patient's token claiming the local physician's role.
    let p = patient(&k);
    assert!(may_join(&k.c, &room, &claims(RoomRole::LocalPhysician, &p), NOW).is_err());
    // Expired, not yet valid.
    let c = claims(RoomRole::Expert, "E1");
    assert_eq!(
        may_join(&k.c, &room, &c, c.exp),
        Err(Refusal::OutsideWindow)
    );
    assert_eq!(
        may_join(&k.c, &room, &c, c.nbf - 1),
        Err(Refusal::OutsideWindow)
    );
}

#[test]
fn nobody_joins_before_consent_nor_after_the_session() {
    // Accepted but no consent on record (CN-05).
    let mut k = Case::new();
    advance(&mut k, State::Scheduled);
    let room = room_id(ID);
    assert_eq!(
        may_join(&k.c, &room, &claims(RoomRole::Patient, &patient(&k)), NOW),
        Err(Refusal::NoConsent)
    );
    // Unverified expert (CN-11) once consent is there.
    k.consent();
    assert_eq!(
        may_join(&k.c, &room, &claims(RoomRole::Expert, "E1"), NOW),
        Err(Refusal::NotVerified {
            role: RoomRole::Expert
        })
    );
    // Before acceptance the room is closed.
    let k = reach(State::Reviewing);
    assert!(matches!(
        may_join(&k.c, &room, &claims(RoomRole::Patient, &patient(&k)), NOW),
        Err(Refusal::NotOpen { .. })
    ));
    // After the session: a replayed token is refused (RTC-04).
    let mut k = reach(State::InSession);
    k.run(&expert("E1"), Command::RequestReport);
    let r = may_join(&k.c, &room, &claims(RoomRole::Expert, "E1"), NOW).unwrap_err();
    assert!(matches!(r, Refusal::NotOpen { .. }), "{r:?}");
    assert!(r.to_string().contains("RTC-04"), "{r}");
}

fn recording_consent(
    role: RoomRole,
    participant: &str,
    at: chrono::DateTime<chrono::Utc>,
    withdrawn: bool,
) -> Command {
    Command::RecordRecordingConsent {
        consent: RecordingConsent {
            role,
            participant: participant.into(),
            document: format!("DocumentReference/recording-{participant}"),
            signed_at: at,
            withdrawn,
        },
    }
}

#[test]
fn recording_needs_everyones_recording_consent_and_a_permitted_starter() {
    let mut k = reach(State::InSession);
    let p = patient(&k);
    let present = vec![
        (RoomRole::Expert, "E1".to_owned()),
        (RoomRole::LocalPhysician, LOCAL_PHYSICIAN.to_owned()),
        (RoomRole::Patient, p.clone()),
    ];
    let expert_perms = RoomRole::Expert.default_permissions();
    // Nobody consented yet: the first one present without a consent is named.
    assert_eq!(
        may_record(&k.c, RoomRole::Expert, expert_perms, &present),
        Err(RecordingRefusal::NoRecordingConsent {
            role: RoomRole::Expert,
            participant: "E1".into()
        })
    );
    let at = k.now;
    k.run(
        &expert("E1"),
        recording_consent(RoomRole::Expert, "E1", at, false),
    );
    k.run(
        &local_doctor(),
        recording_consent(RoomRole::LocalPhysician, LOCAL_PHYSICIAN, at, false),
    );
    // Two of three: still refused, naming the patient.
    let r = may_record(&k.c, RoomRole::Expert, expert_perms, &present).unwrap_err();
    assert_eq!(
        r,
        RecordingRefusal::NoRecordingConsent {
            role: RoomRole::Patient,
            participant: p.clone()
        }
    );
    assert!(r.to_string().contains("RTC-30"), "{r}");
    k.run(
        &local_doctor(),
        recording_consent(RoomRole::Patient, &p, at, false),
    );
    assert_eq!(
        may_record(&k.c, RoomRole::Expert, expert_perms, &present),
        Ok(())
    );
    // A patient's token never starts a recording (RTC-04 AT), even with every consent.
    assert_eq!(
        may_record(
            &k.c,
            RoomRole::Patient,
            RoomRole::Patient.default_permissions(),
            &present
        ),
        Err(RecordingRefusal::NotPermitted {
            role: RoomRole::Patient
        })
    );
    // A withdrawal counts from then on: the running recording must stop.
    k.run(
        &local_doctor(),
        recording_consent(RoomRole::Patient, &p, at, true),
    );
    assert!(matches!(
        recording_allowed(&k.c, &present),
        Err(RecordingRefusal::NoRecordingConsent {
            role: RoomRole::Patient,
            ..
        })
    ));
    // Someone new (an observer) without consent stops it too; with it, it goes on.
    k.run(
        &local_doctor(),
        recording_consent(RoomRole::Patient, &p, at, false),
    );
    let mut with_observer = present.clone();
    with_observer.push((RoomRole::Observer, "O1".into()));
    assert!(recording_allowed(&k.c, &with_observer).is_err());
    k.run(
        &local_doctor(),
        recording_consent(RoomRole::Observer, "O1", at, false),
    );
    assert_eq!(recording_allowed(&k.c, &with_observer), Ok(()));
    // After the session nothing is recorded.
    k.run(&expert("E1"), Command::RequestReport);
    assert!(matches!(
        recording_allowed(&k.c, &present),
        Err(RecordingRefusal::NotOpen { .. })
    ));
}

#[test]
fn recording_consents_name_the_consultations_participants_and_experts_only_their_own() {
    let mut k = reach(State::InSession);
    let at = k.now;
    // Not this consultation's expert.
    let e = k
        .try_run(
            &local_doctor(),
            recording_consent(RoomRole::Expert, "E2", at, false),
        )
        .unwrap_err();
    assert!(e.to_string().contains("consent.participant"), "{e}");
    // An expert records only their own.
    assert!(
        k.try_run(
            &expert("E1"),
            recording_consent(RoomRole::LocalPhysician, LOCAL_PHYSICIAN, at, false)
        )
        .is_err()
    );
    // Nothing in the future.
    assert!(
        k.try_run(
            &expert("E1"),
            recording_consent(
                RoomRole::Expert,
                "E1",
                at + chrono::TimeDelta::hours(1),
                false
            )
        )
        .is_err()
    );
}

#[test]
fn recordings_are_kept_three_years() {
    let at = chrono::DateTime::parse_from_rfc3339("2026-02-28T10:00:00Z")
        .unwrap()
        .to_utc();
    assert_eq!(RECORDING_RETENTION_CLASS, "process-record-audio-video");
    assert_eq!(
        recording_retained_until(at).to_rfc3339(),
        "2029-02-28T10:00:00+00:00"
    );
}
