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
    let at = k.now;
    k.run(
        &local_doctor(),
        Command::RecordConsent {
            consent: Consent {
                signer: ConsentSigner::Patient,
                document: "DocumentReference/consent-1".into(),
                signed_at: at,
                not_suitable_to_inform_patient: false,
            },
        },
    );
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
