//! Identity matching, end to end through the public API (STANDARDS MATCH-05, IHE-01, IHE-02):
//! the deterministic rules and their guards, explanations, grouping, the synthetic Chinese
//! population, and FEBRL 4.

use huizhen_domain::identity::blocking::CandidateIndex;
use huizhen_domain::identity::eval::Evaluator;
use huizhen_domain::identity::synth::{Role, SynthConfig, Truth, generate};
use huizhen_domain::identity::{
    Demographics, EmOptions, FieldKind, Grade, Level, MatchDecision, Matcher, MemoryIndex, OtherId,
    PairFinding, PersonName, PostalAddress, Rule, Thresholds, Weights, blocking_keys,
    estimate_em_with, febrl, normalize, random_pair_vectors, u_from_random_pairs,
};
use huizhen_domain::patient::{PatientRecord, Sex};

/// 张伟, male, born 1985-03-12, with a valid resident id.
const ID_ZHANG: &str = "110105198503120012";
const ID_ZHANG_MOTHER: &str = "110105196001010025";

fn zhang(facility: &str, local: &str) -> Demographics {
    Demographics {
        facility: facility.into(),
        local_id: local.into(),
        identifiers: vec![OtherId::ResidentId {
            value: ID_ZHANG.into(),
        }],
        names: vec![PersonName::text("张伟")],
        birth_date: Some("1985-03-12".into()),
        sex: Some(Sex::Male),
        phones: vec!["13800138000".into()],
        addresses: vec![PostalAddress {
            text: "北京市朝阳区建设路12号3栋401室".into(),
            postal_code: Some("100020".into()),
        }],
    }
}

fn matcher() -> Matcher {
    Matcher::new(Weights::default(), Thresholds::default()).unwrap()
}

fn index_of(records: &[(u64, Demographics)]) -> MemoryIndex {
    let mut index = MemoryIndex::new();
    for (person, d) in records {
        index.insert(*person, normalize(d));
    }
    index
}

fn decide(index: &MemoryIndex, d: &Demographics) -> MatchDecision {
    matcher().decide(d, index)
}

#[test]
fn the_resident_id_and_the_same_name_are_certain_and_explained() {
    let index = index_of(&[(1, zhang("RED", "994"))]);
    let mut incoming = zhang("BLUE", "xyz");
    incoming.names = vec![PersonName::text("張偉")]; // traditional characters
    incoming.birth_date = Some("1985年3月12日".into());
    incoming.phones = vec!["+86 138 0013 8000".into()];
    let d = decide(&index, &incoming);
    assert_eq!(d.grade, Grade::Certain);
    assert_eq!(d.auto_link(), Some(1));
    let c = &d.candidates[0];
    assert_eq!(c.rule, Some(Rule::ResidentIdAndName));
    assert_eq!((c.facility.as_str(), c.local_id.as_str()), ("RED", "994"));
    let level = |f: FieldKind| {
        c.contributions
            .iter()
            .find(|x| x.field == f)
            .and_then(|x| x.level)
    };
    assert_eq!(level(FieldKind::Name), Some(Level::Exact));
    assert_eq!(level(FieldKind::BirthDate), Some(Level::Exact));
    assert_eq!(level(FieldKind::Phone), Some(Level::Exact));
    assert_eq!(level(FieldKind::ResidentId), Some(Level::Exact));
    assert_eq!(level(FieldKind::Insurance), None);
    let sum: f64 = c.contributions.iter().map(|x| x.weight).sum();
    assert!((sum - c.score).abs() < 1e-9);
    // The explanation serialises for the API.
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["grade"], "certain");
    assert_eq!(json["candidates"][0]["rule"], "resident_id_and_name");
    assert_eq!(Grade::Certain.fhir_code(), "certain");
}

#[test]
fn a_pinyin_only_registration_with_the_id_is_certain_a_homophone_is_not() {
    let index = index_of(&[(1, zhang("RED", "994"))]);
    let mut pinyin = zhang("BLUE", "1");
    pinyin.names = vec![PersonName::text("ZHĀNG WĚI")];
    let d = decide(&index, &pinyin);
    assert_eq!(
        (d.grade, d.candidates[0].rule),
        (Grade::Certain, Some(Rule::ResidentIdAndName))
    );
    let mut homophone = zhang("BLUE", "2");
    homophone.names = vec![PersonName::text("张玮")];
    let d = decide(&index, &homophone);
    assert_eq!(
        d.grade,
        Grade::Probable,
        "same id, a different hanzi name: a human decides"
    );
    assert_eq!(d.candidates[0].rule, None);
}

#[test]
fn an_infant_under_a_parents_id_never_links_to_the_parent_through_it() {
    let mut mother = zhang("RED", "1");
    mother.identifiers = vec![OtherId::ResidentId {
        value: ID_ZHANG_MOTHER.into(),
    }];
    mother.names = vec![PersonName::text("李秀英")];
    mother.birth_date = Some("1960-01-01".into());
    mother.sex = Some(Sex::Female);
    let index = index_of(&[(1, mother.clone())]);
    let mut infant = mother.clone();
    infant.local_id = "2".into();
    infant.names = vec![PersonName::text("王小宝")];
    infant.birth_date = Some("2025-06-01".into());
    infant.sex = Some(Sex::Male);
    let d = decide(&index, &infant);
    assert!(d.grade > Grade::Probable, "{d:?}");
    assert_eq!(d.auto_link(), None);
    assert!(
        d.candidates
            .iter()
            .all(|c| c.findings.contains(&PairFinding::HouseholdPattern)
                && c.findings.contains(&PairFinding::SharedIdIgnored)),
        "{d:?}"
    );
    // Even named like the parent (a registrar copying the card), the birth date contradicts
    // the id: never certain.
    let mut copied = infant.clone();
    copied.local_id = "3".into();
    copied.names = mother.names.clone();
    let d = decide(&index, &copied);
    assert_ne!(d.grade, Grade::Certain);
    let c = &d.candidates[0];
    assert!(
        c.findings.contains(&PairFinding::SharedIdIgnored),
        "{:?}",
        c.findings
    );
    assert!(c.findings.contains(&PairFinding::BirthDateConflict));
    let rid = c
        .contributions
        .iter()
        .find(|x| x.field == FieldKind::ResidentId)
        .unwrap();
    assert_eq!((rid.level, rid.weight), (None, 0.0));
}

/// Twins registered without ids: same family name, birth date, sex, phone and address.
fn twins() -> (Demographics, Demographics) {
    let mut a = zhang("RED", "1");
    a.identifiers.clear();
    a.names = vec![PersonName::text("张子涵")];
    a.birth_date = Some("2015-05-05".into());
    let mut b = a.clone();
    b.local_id = "2".into();
    b.names = vec![PersonName::text("张子轩")];
    (a, b)
}

fn finding_codes(c: &huizhen_domain::identity::Candidate) -> Vec<String> {
    serde_json::to_value(&c.findings)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["finding"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn twins_are_never_certain_and_go_to_a_human_with_the_twin_finding() {
    let (a, b) = twins();
    let index = index_of(&[(1, a)]);
    let d = decide(&index, &b);
    assert_eq!(d.grade, Grade::Probable, "{d:?}");
    assert_eq!(d.auto_link(), None);
    let c = &d.candidates[0];
    assert!(c.score >= Thresholds::default().probable);
    assert_eq!(c.rule, None);
    // What the reviewer sees.
    assert!(
        finding_codes(c).contains(&"twin_pattern".to_owned()),
        "{:?}",
        c.findings
    );
    // A facility that links automatically above a score does not link twins.
    let auto = Matcher::new(
        Weights::default(),
        Thresholds {
            auto_link: Some(Thresholds::default().probable),
            ..Thresholds::default()
        },
    )
    .unwrap();
    let d = auto.decide(&b, &index);
    assert_eq!((d.grade, d.candidates[0].rule), (Grade::Probable, None));
    assert!(d.candidates[0].findings.contains(&PairFinding::TwinPattern));
}

#[test]
fn twins_sharing_one_insurance_card_are_not_linked_through_it() {
    // Parents hand one twin's 医保 card in for both: the same psn_no and region.
    let (mut a, mut b) = twins();
    let card = OtherId::Insurance {
        psn_no: "45000012345678".into(),
        region: "450103".into(),
    };
    a.identifiers = vec![card.clone()];
    b.identifiers = vec![card];
    let index = index_of(&[(1, a.clone())]);
    let d = decide(&index, &b);
    assert_eq!(
        (d.grade, d.candidates[0].rule),
        (Grade::Probable, None),
        "{d:?}"
    );
    assert!(d.candidates[0].findings.contains(&PairFinding::TwinPattern));
    // The same card under the same name (a nickname-free update elsewhere) is the rule.
    let mut same = a.clone();
    same.facility = "BLUE".into();
    assert_eq!(
        decide(&index, &same).candidates[0].rule,
        Some(Rule::InsuranceNumber)
    );
}

#[test]
fn twins_with_one_letter_or_a_homophone_between_their_names_are_never_certain() {
    let mut a = zhang("RED", "1");
    a.identifiers.clear();
    a.names = vec![PersonName::text("潘璐")];
    a.birth_date = Some("2011-09-04".into());
    a.sex = Some(Sex::Female);
    let index = index_of(&[(1, a.clone())]);
    // lu/yu: one letter apart in pinyin, two names.
    let mut b = a.clone();
    b.local_id = "2".into();
    b.names = vec![PersonName::text("潘玉")];
    let d = decide(&index, &b);
    assert_eq!(d.grade, Grade::Probable, "{d:?}");
    assert!(d.candidates[0].findings.contains(&PairFinding::TwinPattern));
    // The same hanzi name written in pinyin elsewhere with one letter changed: also two
    // names when the other side is in hanzi.
    b.names = vec![PersonName::text("Pan Yu")];
    let d = decide(&index, &b);
    assert_eq!(d.grade, Grade::Probable, "{d:?}");
    assert!(d.candidates[0].findings.contains(&PairFinding::TwinPattern));
    // Boy–girl twins named with homophones (许晶/许静): the sexes conflict.
    let mut girl = a.clone();
    girl.names = vec![PersonName::text("许静")];
    let index = index_of(&[(1, girl.clone())]);
    let mut boy = girl.clone();
    boy.local_id = "2".into();
    boy.names = vec![PersonName::text("许晶")];
    boy.sex = Some(Sex::Male);
    let d = decide(&index, &boy);
    assert_ne!(d.grade, Grade::Certain, "{d:?}");
    assert!(d.candidates[0].findings.contains(&PairFinding::TwinPattern));
    // A homophone with the same sex is a registration slip, not twins.
    let mut slip = boy.clone();
    slip.sex = Some(Sex::Female);
    let d = decide(&index, &slip);
    assert_eq!(d.grade, Grade::Probable, "{d:?}");
    assert!(!d.candidates[0].findings.contains(&PairFinding::TwinPattern));
}

/// A FEBRL-style record: parts in Latin letters, a national id, no sex or phone.
fn latin(local: &str, family: &str, given: &str, dob: &str, ssn: &str) -> Demographics {
    Demographics {
        facility: "A".into(),
        local_id: local.into(),
        identifiers: vec![OtherId::National {
            system: "ssn".into(),
            value: ssn.into(),
        }],
        names: vec![PersonName::parts(family, given)],
        birth_date: Some(dob.into()),
        sex: None,
        phones: vec![],
        addresses: vec![PostalAddress {
            text: "10 laughton street manor park thornbury vic".into(),
            postal_code: Some("6258".into()),
        }],
    }
}

#[test]
fn a_replaced_given_name_is_graded_by_its_score_never_certain() {
    let index = index_of(&[(1, latin("1", "fitzpatrick", "ethan", "19040922", "6023201"))]);
    // A facility linking automatically above a score, with a lower probable threshold.
    let auto = Matcher::new(
        Weights::default(),
        Thresholds {
            auto_link: Some(20.0),
            probable: 20.0,
            possible: 10.0,
        },
    )
    .unwrap();
    // The id one typo apart speaks for the duplicate: probable for a human, told why, even
    // where the facility links automatically above a score.
    let typo = latin("2", "fitzpatrick", "caleb", "19040922", "6023210");
    for d in [decide(&index, &typo), auto.decide(&typo, &index)] {
        assert_eq!(
            (d.grade, d.candidates[0].rule),
            (Grade::Probable, None),
            "{d:?}"
        );
        assert!(d.candidates[0].findings.contains(&PairFinding::TwinPattern));
    }
    // An unrelated id (FEBRL replaces both) leaves nothing that tells it from a twin's
    // record: its score decides, possible at the default thresholds (21.2 < 22), probable
    // (never certain) where the threshold is 20.
    let unrelated = latin("3", "fitzpatrick", "caleb", "19040922", "3284048");
    let d = decide(&index, &unrelated);
    assert_eq!(d.grade, Grade::Possible, "{d:?}");
    assert!(d.candidates[0].findings.contains(&PairFinding::TwinPattern));
    let d = auto.decide(&unrelated, &index);
    assert_eq!(
        (d.grade, d.candidates[0].rule),
        (Grade::Probable, None),
        "{d:?}"
    );
    assert!(d.candidates[0].findings.contains(&PairFinding::TwinPattern));
}

#[test]
fn a_mistyped_national_id_is_found_without_a_birth_date_and_explained() {
    // FEBRL 4, rec-4069: no birth date, another postcode digit, one id digit mistyped: no
    // name, date or postcode key in common; the id's one-slip neighbourhood finds it.
    let mut a = latin("1", "matthews", "jeremy", "19700526", "6692221");
    a.addresses[0] = PostalAddress {
        text: "70 spensley place pandora orchard cecil park act".into(),
        postal_code: Some("3030".into()),
    };
    let index = index_of(&[(1, a.clone())]);
    let mut b = a.clone();
    b.local_id = "2".into();
    b.birth_date = None;
    b.identifiers = vec![OtherId::National {
        system: "ssn".into(),
        value: "6692321".into(),
    }];
    b.addresses[0] = PostalAddress {
        text: "70 spensley place pandoraoorchard cecig park act".into(),
        postal_code: Some("3035".into()),
    };
    let d = decide(&index, &b);
    assert_eq!(d.grade, Grade::Probable, "{d:?}");
    let level = |f: FieldKind| {
        d.candidates[0]
            .contributions
            .iter()
            .find(|c| c.field == f)
            .map(|c| (c.level, c.weight > 0.0))
    };
    assert_eq!(
        level(FieldKind::NationalId),
        Some((Some(Level::Close), true))
    );
    assert_eq!(level(FieldKind::Address), Some((Some(Level::Exact), true)));
    assert_eq!(level(FieldKind::BirthDate), Some((None, false)));
    // Every field is named in the explanation, compared or not.
    assert_eq!(d.candidates[0].contributions.len(), FieldKind::ALL.len());
}

#[test]
fn a_lost_space_in_the_address_still_agrees_in_part() {
    // FEBRL 4, rec-606: both names replaced, another house number, two words run together;
    // the equal id and birth date with the same street make it one for a human.
    let mut a = latin("1", "morrison", "taliah", "19090828", "3519655");
    a.addresses[0] = PostalAddress {
        text: "7 cope place strawberry fields dover nsw".into(),
        postal_code: Some("6714".into()),
    };
    let index = index_of(&[(1, a.clone())]);
    let mut b = latin("2", "nguyen", "samantha", "19090828", "3519655");
    b.addresses[0] = PostalAddress {
        text: "18 copeplace strawberrmyfields dover nsw".into(),
        postal_code: Some("6774".into()),
    };
    let d = decide(&index, &b);
    let address = d.candidates[0]
        .contributions
        .iter()
        .find(|c| c.field == FieldKind::Address)
        .unwrap();
    assert_eq!(address.level, Some(Level::Partial), "{d:?}");
    assert_eq!(d.grade, Grade::Probable, "{d:?}");
}

#[test]
fn a_wrong_birth_date_under_the_same_name_is_for_a_human_a_parents_is_not() {
    // A household's phone and address, no id.
    let latin = |local: &str, family: &str, given: &str, dob: &str| {
        let mut d = latin(local, family, given, dob, "");
        d.identifiers.clear();
        d.phones = vec!["0298765432".into()];
        d
    };
    let index = index_of(&[(1, latin("1", "ferris", "jacqueline", "19250708"))]);
    // The same name and address, another birth date: probably a wrong date; never certain.
    let d = decide(&index, &latin("2", "ferris", "jacqueline", "19251030"));
    assert_eq!(d.grade, Grade::Probable, "{d:?}");
    assert!(
        d.candidates[0]
            .findings
            .contains(&PairFinding::BirthDateConflict)
    );
    // A keying slip in the date (the day one off) is no conflict at all.
    let d = decide(&index, &latin("3", "ferris", "jacqueline", "19250709"));
    let dob = d.candidates[0]
        .contributions
        .iter()
        .find(|c| c.field == FieldKind::BirthDate)
        .unwrap();
    assert_eq!(dob.level, Some(Level::Typo));
    assert!(dob.weight > 0.0);
    // Another given name and another birth date at the same address: a parent or sibling.
    let mut parent = latin("4", "ferris", "jaiden", "19571024");
    parent.names.push(PersonName::parts("ferris", "jacky"));
    let d = decide(&index, &parent);
    assert!(d.grade >= Grade::Possible, "{d:?}");
    assert!(
        d.candidates
            .iter()
            .all(|c| c.findings.contains(&PairFinding::HouseholdPattern)),
        "{d:?}"
    );
    // Only the household agrees: at most possible even where the thresholds would make the
    // score probable, or link above it.
    let low = Matcher::new(
        Weights::default(),
        Thresholds {
            auto_link: Some(1.0),
            probable: 1.0,
            possible: 0.5,
        },
    )
    .unwrap();
    let d = low.decide(&parent, &index);
    let c = &d.candidates[0];
    assert!(c.score >= 1.0, "{d:?}");
    assert_eq!((c.grade, c.rule), (Grade::Possible, None));
    assert!(finding_codes(c).contains(&"household_pattern".to_owned()));
}

#[test]
fn conflicting_sex_or_birth_date_is_never_certain() {
    let index = index_of(&[(1, zhang("RED", "1"))]);
    let mut sex = zhang("BLUE", "1");
    sex.sex = Some(Sex::Female);
    let d = decide(&index, &sex);
    assert_ne!(d.grade, Grade::Certain);
    assert!(d.candidates[0].findings.contains(&PairFinding::SexConflict));
    let mut dob = zhang("BLUE", "2");
    dob.birth_date = Some("1991-07-30".into());
    let d = decide(&index, &dob);
    assert_ne!(d.grade, Grade::Certain);
    assert!(
        d.candidates[0]
            .findings
            .contains(&PairFinding::BirthDateConflict)
    );
    // A day/month swap is not a conflict.
    let mut swap = zhang("BLUE", "3");
    swap.birth_date = Some("1985-12-03".into());
    let d = decide(&index, &swap);
    assert_eq!(d.grade, Grade::Probable);
    let dob = d.candidates[0]
        .contributions
        .iter()
        .find(|x| x.field == FieldKind::BirthDate)
        .unwrap();
    assert_eq!(dob.level, Some(Level::Swapped));
}

#[test]
fn the_insurance_number_with_its_region_is_certain() {
    let with_psn = |facility: &str, region: &str| {
        let mut d = zhang(facility, "1");
        d.identifiers = vec![OtherId::Insurance {
            psn_no: "45000012345678".into(),
            region: region.into(),
        }];
        d
    };
    let index = index_of(&[(1, with_psn("RED", "450103"))]);
    let d = decide(&index, &with_psn("BLUE", "450103"));
    assert_eq!(
        (d.grade, d.candidates[0].rule),
        (Grade::Certain, Some(Rule::InsuranceNumber))
    );
    let d = decide(&index, &with_psn("BLUE", "110105"));
    assert_ne!(d.grade, Grade::Certain);
}

#[test]
fn a_score_alone_never_links_unless_the_facility_enables_it() {
    let mut a = zhang("RED", "1");
    a.identifiers.clear();
    let index = index_of(&[(1, a.clone())]);
    let mut b = a.clone();
    b.facility = "BLUE".into();
    let d = decide(&index, &b);
    assert_eq!(d.grade, Grade::Probable);
    assert_eq!(d.auto_link(), None);
    let auto = Matcher::new(
        Weights::default(),
        Thresholds {
            auto_link: Some(40.0),
            ..Thresholds::default()
        },
    )
    .unwrap();
    let d = auto.decide(&b, &index);
    assert_eq!(
        (d.grade, d.candidates[0].rule),
        (Grade::Certain, Some(Rule::AutoLinkThreshold))
    );
    // The guards hold with auto-link on too.
    let mut other_sex = b.clone();
    other_sex.sex = Some(Sex::Female);
    assert_ne!(auto.decide(&other_sex, &index).grade, Grade::Certain);
}

#[test]
fn records_of_one_person_are_grouped_and_the_record_itself_is_certain() {
    let mut pinyin = zhang("GREEN", "7");
    pinyin.names = vec![PersonName::text("Zhang Wei")];
    let index = index_of(&[
        (1, zhang("RED", "1")),
        (1, pinyin),
        (2, {
            let mut other = zhang("RED", "2");
            other.identifiers.clear();
            other.names = vec![PersonName::text("张强")];
            other.birth_date = Some("1950-01-01".into());
            other
        }),
    ]);
    let d = decide(&index, &zhang("BLUE", "1"));
    assert_eq!(d.person, Some(1));
    let first = &d.candidates[0];
    assert_eq!(first.records.len(), 2);
    assert_eq!(
        (first.facility.as_str(), first.rule),
        ("RED", Some(Rule::ResidentIdAndName))
    );
    assert!(
        d.candidates
            .iter()
            .all(|c| c.person_id != 2 || c.grade != Grade::Certain)
    );
    // An update of a known record is the record itself.
    let mut update = zhang("RED", "1");
    update.names = vec![PersonName::text("张大伟")];
    let d = decide(&index, &update);
    assert_eq!(
        (d.grade, d.candidates[0].rule),
        (Grade::Certain, Some(Rule::SameLocalId))
    );
    assert_eq!(
        index.cross_references("RED", "1"),
        Some(vec![("GREEN".into(), "7".into())])
    );
}

#[test]
fn two_certain_persons_go_to_a_human() {
    // The same person filed twice as two persons (a missed merge).
    let index = index_of(&[(1, zhang("RED", "1")), (2, zhang("GREEN", "1"))]);
    let d = decide(&index, &zhang("BLUE", "1"));
    assert_eq!(d.grade, Grade::Probable);
    assert_eq!(d.candidates.len(), 2);
    assert!(
        d.candidates
            .iter()
            .all(|c| c.findings.contains(&PairFinding::AmbiguousCertain))
    );
}

#[test]
fn demographics_from_an_adt_record() {
    let record: PatientRecord = serde_json::from_value(serde_json::json!({
        "message_type": "ADT^A04",
        "event": "A04",
        "sending_facility": "HOSP_A",
        "identifiers": [
            {"id": "MRN001", "assigning_authority": "HOSP_A", "type_code": "MR"},
            {"id": ID_ZHANG, "type_code": "NI"},
            {"id": "P123", "assigning_authority": "450103", "type_code": "PSN_NO"}
        ],
        "names": [{"family": "张", "given": "伟", "text": "张伟", "representation": "I"},
                  {"family": "ZHANG", "given": "WEI", "text": "ZHANG WEI", "representation": "P"}],
        "birth_date": {"raw": "19850312", "iso": "1985-03-12"},
        "sex": {"code": "M", "normalized": "male"},
        "home_phones": [{"number": "+86 138 0013 8000", "digits": "13800138000"}],
        "addresses": [{"street": "建设路12号", "city": "北京市", "province": "北京", "postal_code": "100020"}]
    }))
    .unwrap();
    let d = Demographics::from_record(&record, None).unwrap();
    assert_eq!(
        (d.facility.as_str(), d.local_id.as_str()),
        ("HOSP_A", "MRN001")
    );
    assert_eq!(
        d.identifiers,
        vec![
            OtherId::ResidentId {
                value: ID_ZHANG.into()
            },
            OtherId::Insurance {
                psn_no: "P123".into(),
                region: "450103".into()
            }
        ]
    );
    assert_eq!(d.names.len(), 2);
    assert_eq!(d.sex, Some(Sex::Male));
    assert_eq!(d.phones, vec!["13800138000".to_owned()]);
    assert_eq!(d.addresses[0].postal_code.as_deref(), Some("100020"));
    let index = index_of(&[(1, zhang("RED", "994"))]);
    assert_eq!(decide(&index, &d).grade, Grade::Certain);
    // The direct form (an API, a FHIR Patient) round-trips through JSON.
    let json = serde_json::to_string(&d).unwrap();
    assert_eq!(serde_json::from_str::<Demographics>(&json).unwrap(), d);
}

/// MATCH-05 AT: a labelled set (rare characters, minority names with `·`, twins, infants
/// under a parent's id, several facilities) at the default weights and thresholds.
#[test]
fn the_synthetic_chinese_population_meets_the_targets() {
    let records = generate(SynthConfig {
        people: 5_000,
        ..SynthConfig::default()
    });
    let matcher = matcher();
    let mut ev = Evaluator::new(&matcher);
    for r in &records {
        ev.decide(&r.demographics, r.truth);
    }
    let e = ev.evaluation();
    assert!(e.certain_pairs > 500, "{e:?}");
    assert!(e.certain_precision() >= 0.999, "{e:?}");
    // Zero auto-links between twins, parent and child, siblings; such pairs may reach
    // `probable` (a human decides) but each says why.
    assert_eq!(e.twin_auto_links, 0, "{e:?}");
    assert_eq!(e.parent_child_auto_links, 0, "{e:?}");
    assert_eq!(e.sibling_auto_links, 0, "{e:?}");
    assert!(e.twin_predicted > 0, "twins reach the queue: {e:?}");
    assert_eq!(e.guard_unexplained, 0, "{e:?}");
    // Twins (and siblings born one date component apart) queued as probable are the price
    // of the twin pattern's cap at probable (2026-12, 5,000 people: 141 twin and 3 sibling
    // pairs, precision 0.952); the other predicted pairs are as precise as before.
    let household = e.twin_predicted + e.parent_child_predicted + e.sibling_predicted;
    let others = e.predicted_pairs - household;
    assert!(e.true_positives * 1000 >= others * 999, "{e:?}");
    assert!(e.precision() >= 0.94, "{e:?}");
    assert!(e.recall() >= 0.96, "{e:?}");
    assert!(e.f1() >= 0.95, "{e:?}");
    assert!(records.iter().any(|r| r.truth.role == Role::Twin));
}

/// FEBRL 4: A imported, each B record decided against it; weights by EM (u from random pairs,
/// m and the match share from the blocked pairs), no hand tuning to the truth.
#[test]
fn febrl4_links_with_em_weights() {
    let a = febrl::parse(include_str!("../testdata/febrl4/febrl4a.csv"), "A");
    let b = febrl::parse(include_str!("../testdata/febrl4/febrl4b.csv"), "B");
    assert_eq!((a.len(), b.len()), (5_000, 5_000));
    let seed = matcher();
    let mut index = MemoryIndex::new();
    for r in &a {
        let id = index.new_person_id();
        index.insert(id, normalize(&r.demographics));
    }
    let incoming: Vec<_> = b.iter().map(|r| normalize(&r.demographics)).collect();
    let everyone: Vec<_> = a
        .iter()
        .chain(b.iter())
        .map(|r| normalize(&r.demographics))
        .collect();
    let initial = u_from_random_pairs(
        &random_pair_vectors(&everyone, 50_000, 4),
        &Weights::default(),
    );
    let em = estimate_em_with(
        &seed.comparison_vectors(&incoming, &index),
        &initial,
        EmOptions {
            fix_u: true,
            ..EmOptions::default()
        },
    )
    .unwrap();
    let matcher = Matcher::new(em.weights, Thresholds::default()).unwrap();
    let mut ev = Evaluator::new(&matcher);
    let truth = |person| Truth {
        person,
        family: person,
        role: Role::Adult,
    };
    for r in &a {
        ev.preload(&r.demographics, truth(r.person));
    }
    let mut twin_pattern_queued = 0;
    for r in &b {
        let d = ev.decide(&r.demographics, truth(r.person));
        let original = format!("rec-{}-org", r.person);
        // The original found under the twin pattern with no identifier agreeing: nothing
        // but a human tells it from a twin's record.
        twin_pattern_queued += usize::from(d.candidates.iter().any(|c| {
            let id_agrees = c.contributions.iter().any(|x| {
                x.field == FieldKind::NationalId
                    && matches!(x.level, Some(Level::Exact | Level::Close))
            });
            c.local_id == original
                && c.grade == Grade::Probable
                && c.findings.contains(&PairFinding::TwinPattern)
                && !id_agrees
        }));
    }
    let e = ev.evaluation();
    assert_eq!(e.true_pairs, 5_000);
    assert_eq!(twin_pattern_queued, 13, "{e:?}");
    assert_eq!(e.certain_pairs, 0, "no rule applies and auto-link is off");
    // 2026-12: 4,999 of 5,000 found, no false link (F1 0.9999). 13 of them are duplicates
    // whose given name and id were both replaced, which nothing tells from twins (same
    // family name, birth date and street, other given name, other id): the twin pattern,
    // queued as probable with its finding, never certain. The one missed has no birth date
    // (a household member's pattern, score 17.4).
    assert!(e.precision() >= 0.9995, "{e:?}");
    assert!(e.recall() >= 0.9998, "{e:?}");
    assert!(e.f1() >= 0.9998, "{e:?}");
    // Blocking loses no true pair: every original is among its duplicate's candidates.
    let missed: Vec<&str> = b
        .iter()
        .zip(&incoming)
        .filter(|(r, n)| {
            let original = format!("rec-{}-org", r.person);
            !index
                .candidates(&blocking_keys(n), matcher.candidate_limit)
                .iter()
                .any(|c| c.person.local_id == original)
        })
        .map(|(r, _)| r.demographics.local_id.as_str())
        .collect();
    assert!(missed.is_empty(), "never compared: {missed:?}");
}
