//! Whose open-case load a consultation is (MATCH-30) through a whole life: an offer takes one,
//! an expired offer and a decline give it back, a fan-out takes one from every pool member,
//! an acceptance gives back the others', the end of the case gives back the accepted
//! expert's.

use std::collections::BTreeMap;

use huizhen_domain::consultation::*;

use crate::support::*;

/// Applies `load_changes` of one command to `load`; the changes.
fn step(
    k: &mut Case,
    load: &mut BTreeMap<String, i64>,
    actor: &Actor,
    command: Command,
) -> Vec<(String, i64)> {
    let before = k.c.clone();
    k.run(actor, command);
    let changes = load_changes(&before, &k.c);
    for (e, d) in &changes {
        *load.entry(e.clone()).or_default() += d;
    }
    changes
}

fn ch(list: &[(&str, i64)]) -> Vec<(String, i64)> {
    list.iter().map(|(e, d)| ((*e).to_owned(), *d)).collect()
}

#[test]
fn the_load_follows_offers_declines_a_fan_out_and_the_end() {
    let mut k = reach(State::PendingMatch);
    let mut load = BTreeMap::new();
    let deadline = k.now + minutes(10);
    assert_eq!(
        step(
            &mut k,
            &mut load,
            &system(),
            Command::Offer {
                to: offeree("E1"),
                deadline
            }
        ),
        ch(&[("E1", 1)])
    );
    // The deadline passes: the re-offer expires E1's offer and gives E2 one.
    k.now = deadline;
    let deadline = k.now + minutes(11);
    assert_eq!(
        step(
            &mut k,
            &mut load,
            &system(),
            Command::Offer {
                to: offeree("E2"),
                deadline
            }
        ),
        ch(&[("E1", -1), ("E2", 1)])
    );
    assert_eq!(
        step(
            &mut k,
            &mut load,
            &expert("E2"),
            Command::Reject {
                reason: "手术中".into()
            }
        ),
        ch(&[("E2", -1)])
    );
    let pool = ["E3", "E4", "E5"].map(offeree).to_vec();
    let deadline = k.now + minutes(10);
    assert_eq!(
        step(
            &mut k,
            &mut load,
            &system(),
            Command::FanOut { pool, deadline }
        ),
        ch(&[("E3", 1), ("E4", 1), ("E5", 1)])
    );
    assert_eq!(
        step(
            &mut k,
            &mut load,
            &expert("E4"),
            Command::Reject {
                reason: "不在岗".into()
            }
        ),
        ch(&[("E4", -1)])
    );
    assert_eq!(
        step(&mut k, &mut load, &expert("E3"), Command::Open),
        ch(&[])
    );
    let expected_version = k.c.version();
    assert_eq!(
        step(
            &mut k,
            &mut load,
            &expert("E3"),
            Command::Accept { expected_version }
        ),
        ch(&[("E5", -1)]),
        "the accepted expert keeps it, the rest of the pool is released"
    );
    assert_eq!(k.c.load_holders().into_iter().collect::<Vec<_>>(), ["E3"]);
    assert_eq!(
        step(&mut k, &mut load, &local_doctor(), Command::Start),
        ch(&[])
    );
    assert_eq!(
        step(&mut k, &mut load, &local_doctor(), Command::Pause),
        ch(&[])
    );
    assert_eq!(
        step(
            &mut k,
            &mut load,
            &coordinator(),
            Command::Cancel {
                reason: "患者转院".into()
            }
        ),
        ch(&[("E3", -1)])
    );
    assert!(k.c.load_holders().is_empty());
    assert!(load.values().all(|n| *n == 0), "{load:?}");
}

#[test]
fn a_no_show_and_a_completion_release_the_accepted_expert() {
    let mut k = reach(State::Scheduled);
    assert_eq!(k.c.load_holders().into_iter().collect::<Vec<_>>(), ["E1"]);
    let before = k.c.clone();
    k.run(
        &system(),
        Command::Fail {
            code: FailReason::NoShow,
            reason: "appointment b1 was a no-show".into(),
        },
    );
    assert_eq!(load_changes(&before, &k.c), ch(&[("E1", -1)]));

    let mut k = reach(State::InSession);
    let at = k.now;
    k.run(&local_doctor(), Command::RequestReport);
    k.run(
        &expert("E1"),
        Command::SignOpinion {
            signed: signed_opinion(ID, "E1", at),
        },
    );
    k.run(
        &local_doctor(),
        Command::RecordLocalDecision {
            decision: decision(),
        },
    );
    let before = k.c.clone();
    k.run(&expert("E1"), Command::Complete);
    assert_eq!(load_changes(&before, &k.c), ch(&[("E1", -1)]));
    // Records and escalations change nobody's load.
    let mut k = reach(State::Offered);
    let before = k.c.clone();
    k.run(
        &coordinator(),
        Command::Escalate {
            to: "duty-coordinator".into(),
        },
    );
    assert_eq!(load_changes(&before, &k.c), ch(&[]));
}
