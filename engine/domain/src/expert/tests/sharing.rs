//! What matching shares instead of copying: the index's experts in the snapshot, one reason
//! text for many exclusions; and candidates in any order, or repeated, counted once.

use super::*;

#[test]
fn the_snapshot_shares_the_index_experts_and_later_state_leaves_it_alone() {
    let mut index = MemoryExpertIndex::new(varied_experts(), agreements());
    let cfg = MatchConfig::default();
    let d = match_experts(&case(), &index, &DefaultScorer, &cfg, now(), 3).unwrap();
    assert!(!d.snapshot.experts.is_empty());
    for e in &d.snapshot.experts {
        let filed = index.experts().iter().find(|x| x.id == e.id).unwrap();
        assert!(
            std::sync::Arc::ptr_eq(e, filed),
            "{} is shared, not copied",
            e.id
        );
    }
    // A later load change copies the expert in the index; the decision keeps what it saw.
    let who = d.snapshot.experts[0].id.clone();
    let seen = d.snapshot.experts[0].load;
    let busier = Load {
        open_consultations: seen.open_consultations + 1,
        sessions_today: 0,
    };
    assert!(index.set_load(&who, busier));
    assert_eq!(d.snapshot.experts[0].load, seen);
    assert_eq!(index.get(&who).unwrap().load, busier);
    assert!(d.replay(&DefaultScorer).unwrap().is_identical());
}

#[test]
fn a_reason_shared_by_many_exclusions_is_written_once_per_case() {
    // Three experts of a facility without an agreement, two unverified, two at the cap.
    let experts: Vec<Expert> = (0..3)
        .map(|i| {
            let mut e = expert(&format!("x{i}"));
            e.facility = "H-FAR".into();
            e.licence_verified = i == 0;
            e.load.open_consultations = if i == 0 { 1 } else { 5 };
            e
        })
        .collect();
    let d = decide_with(
        &case(),
        experts,
        agreements(),
        &MatchConfig::default(),
        now(),
    );
    assert_eq!(d.exclusions.len(), 3);
    let text = |x: &Exclusion, code: ReasonCode| {
        x.reasons
            .iter()
            .find(|r| r.code == code)
            .map(|r| r.text.clone())
            .unwrap()
    };
    let (a, b, c) = (&d.exclusions[0], &d.exclusions[1], &d.exclusions[2]);
    let none = text(a, ReasonCode::NoActiveAgreement);
    assert_eq!(&*none, "no cooperation agreement H-COUNTY → H-FAR (CN-02)");
    for x in [b, c] {
        assert!(std::sync::Arc::ptr_eq(
            &none,
            &text(x, ReasonCode::NoActiveAgreement)
        ));
    }
    let cap = text(b, ReasonCode::AtLoadCap);
    assert_eq!(&*cap, "at the load cap: 5 open consultations (cap 5)");
    assert!(std::sync::Arc::ptr_eq(
        &cap,
        &text(c, ReasonCode::AtLoadCap)
    ));
    assert!(std::sync::Arc::ptr_eq(
        &text(b, ReasonCode::LicenceNotVerified),
        &text(c, ReasonCode::LicenceNotVerified)
    ));
    // Serialised, a shared text is a plain string, as before.
    let json = serde_json::to_value(a).unwrap();
    assert_eq!(json["reasons"][0]["text"], *none);
}

#[test]
fn candidates_out_of_id_order_or_repeated_are_each_considered_once() {
    let mut experts = varied_experts();
    experts.reverse();
    experts.push(experts[0].clone());
    let index = ListIndex {
        experts,
        agreements: agreements(),
    };
    let d = match_experts(
        &case(),
        &index,
        &DefaultScorer,
        &MatchConfig::default(),
        now(),
        7,
    )
    .unwrap();
    assert_eq!(d.ranked.len() + d.exclusions.len(), 12);
    let sorted = MemoryExpertIndex::new(varied_experts(), agreements());
    let e = match_experts(
        &case(),
        &sorted,
        &DefaultScorer,
        &MatchConfig::default(),
        now(),
        7,
    )
    .unwrap();
    assert_eq!(d.ranked, e.ranked);
    assert_eq!(d.selected, e.selected);
}
