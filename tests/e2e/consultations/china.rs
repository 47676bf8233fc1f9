//! The China rules of `workflow.compliance` through the API (docs/workflow.md, "China
//! rules"): a facility that does not offer a service type, and agreements that are unknown,
//! another facility's or out of force, are refused at creation with the rule (CN-01, CN-02);
//! a child's follow-up visit online is refused at `start` until a verified guardian and a
//! verified physician are on record (CN-13), and a verification older than the facility allows
//! must be renewed (CN-11); each refusal lists the rules, each is allowed once met.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Months, NaiveDate, TimeDelta};
use huizhen_core::clock::{Clock, FakeClock};
use huizhen_domain::compliance::{ComplianceConfig, RulesConfig};
use huizhen_domain::consultation::ServiceType;
use huizhen_domain::expert::{Agreement, AgreementKind};
use huizhen_domain::identity::{Demographics, PersonName, normalize};
use huizhen_signing::testca::TestCa;
use serde_json::{Value, json};

use super::{EXP, REQ, Wf, doctor, expert, request, seed_registry, start_configured, t0};
use crate::support::{Backend, both_backends, fresh_db};

both_backends!(a_child_s_visit_starts_once_a_guardian_and_a_physician_are_verified);

/// F-REQ does not offer direct-to-patient visits; its verifications count for 30 minutes.
async fn start(b: Backend) -> Option<Wf> {
    let db = fresh_db(b).await?;
    let ca = Arc::new(TestCa::generate("Huizhen E2E CA").unwrap());
    let clock = Arc::new(FakeClock::new(t0()));
    let wf = start_configured(db, ca, clock, &[], |w| {
        w.compliance = ComplianceConfig {
            service_types: BTreeMap::from([(
                ServiceType::DirectToPatient,
                RulesConfig {
                    verification_max_age_minutes: Some(30),
                    ..RulesConfig::default()
                },
            )]),
            facilities: BTreeMap::from([(
                REQ.to_owned(),
                BTreeMap::from([(
                    ServiceType::InternetHospital,
                    RulesConfig {
                        offered: Some(false),
                        ..RulesConfig::default()
                    },
                )]),
            )]),
            retention: BTreeMap::new(),
        };
    })
    .await;
    seed_registry(&wf, 2).await;
    Some(wf)
}

fn agreement(id: &str, facility: &str, from: (i32, u32), to: Option<(i32, u32)>) -> Agreement {
    Agreement {
        id: id.into(),
        requesting_facility: facility.into(),
        expert_facility: EXP.into(),
        kind: AgreementKind::MedicalConsortium,
        valid_from: NaiveDate::from_ymd_opt(from.0, from.1, 1).unwrap(),
        valid_to: to.map(|(y, m)| NaiveDate::from_ymd_opt(y, m, 1).unwrap()),
    }
}

async fn refused(wf: &Wf, request: Value) -> (String, String) {
    let (s, v, _) = wf
        .call("POST", "/api/consultations", &doctor(), Some(request), None)
        .await;
    assert_eq!(s, 422, "{v}");
    let p = &v["problems"][0];
    (
        p["path"].as_str().unwrap().to_owned(),
        p["problem"].as_str().unwrap().to_owned(),
    )
}

/// CN-01, CN-02: refused with the rule and the field; allowed under an agreement in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_follows_the_facility_s_service_types_and_agreements() {
    let Some(wf) = start(Backend::Sqlite).await else {
        return;
    };
    let expired = agreement("AG-OLD", REQ, (2019, 1), Some((2020, 1)));
    let next_year = agreement("AG-NEXT", REQ, (2099, 1), None);
    let foreign = agreement("AG-B", "F-OTHER", (2020, 1), None);
    wf.engine
        .store
        .upsert_experts(&[], &[expired, next_year, foreign], None)
        .await
        .unwrap();
    let with = |a: &str| {
        let mut r = request(1);
        r["agreement"] = json!(a);
        r
    };
    let (path, problem) = refused(&wf, with("AG-NONE")).await;
    assert_eq!(path, "agreement");
    assert!(
        problem.contains("`AG-NONE` is not a cooperation agreement of facility `F-REQ` (CN-02)"),
        "{problem}"
    );
    let (_, problem) = refused(&wf, with("AG-B")).await;
    assert!(problem.contains("CN-02"), "{problem}");
    let (_, problem) = refused(&wf, with("AG-OLD")).await;
    assert!(
        problem.contains("not in force") && problem.contains("valid 2019-01-01 to 2020-01-01"),
        "{problem}"
    );
    let (_, problem) = refused(&wf, with("AG-NEXT")).await;
    assert!(problem.contains("valid from 2099-01-01"), "{problem}");
    let mut ih = request(1);
    ih["service_type"] = json!("internet-hospital");
    ih.as_object_mut().unwrap().remove("agreement");
    let (path, problem) = refused(&wf, ih).await;
    assert_eq!(path, "service_type");
    assert!(
        problem.contains("does not offer internet-hospital consultations (CN-01)"),
        "{problem}"
    );
    wf.create(with("AG-1")).await;
    wf.stop().await;
}

async fn a_child_s_visit_starts_once_a_guardian_and_a_physician_are_verified(b: Backend) {
    let Some(wf) = start(b).await else {
        return;
    };
    // A four-year-old, as the requesting facility registered her.
    let today = wf.clock.now().date_naive();
    let born = today.checked_sub_months(Months::new(4 * 12 + 2)).unwrap();
    let child = normalize(&Demographics {
        facility: REQ.into(),
        local_id: "MRN-4411".into(),
        identifiers: vec![],
        names: vec![PersonName::text("王小雨")],
        birth_date: Some(born.format("%Y-%m-%d").to_string()),
        sex: None,
        phones: vec![],
        addresses: vec![],
    });
    let (_, person) = wf.engine.store.identity_upsert(&child, None).await.unwrap();
    let mut r = request(person as u64);
    r["service_type"] = json!("direct-to-patient");
    r.as_object_mut().unwrap().remove("agreement");
    let (id, v) = wf.approved(r).await;
    assert_eq!(v["state"], "offered", "{v}");
    let e = super::offerees(&v)[0].clone();
    let version = v["version"].as_u64().unwrap();
    wf.ok(&id, "accept", &expert(&e), json!({ "version": version }))
        .await;

    let verify = |subject: Value, at: chrono::DateTime<chrono::Utc>| json!({"verification": {"subject": subject, "method": "id-card-face", "verified_at": at, "result": "passed", "provider_reference": "rn-1"}});
    // Consent, the expert and the patient verified two hours ago, the prior diagnosis.
    let early = wf.clock.now() - TimeDelta::hours(2);
    wf.ok(&id, "record_consent", &doctor(), json!({"consent": {"signer": "guardian", "document": "DocumentReference/consent-7", "signed_at": early, "not_suitable_to_inform_patient": true}})).await;
    wf.ok(
        &id,
        "record_verification",
        &doctor(),
        verify(json!({"kind": "physician", "practitioner": e}), early),
    )
    .await;
    wf.ok(
        &id,
        "record_verification",
        &doctor(),
        verify(json!({"kind": "patient"}), early),
    )
    .await;
    wf.ok(&id, "record_prior_diagnosis", &expert(&e), json!({"evidence": {"code": "J45.9", "kind": "outpatient-record", "document": "DocumentReference/op-3"}})).await;

    let (s, v) = wf.act(&id, "start", &expert(&e), json!({})).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("missing-requirements")),
        "{v}"
    );
    let rules: Vec<&str> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    // Both verifications are stale (30 minutes), a physician and the guardian are missing.
    assert_eq!(rules, ["CN-11", "CN-06", "CN-11", "CN-13"], "{v}");
    assert!(
        v["rules"][3]["reason"]
            .as_str()
            .unwrap()
            .contains("under 6"),
        "{v}"
    );

    let now = wf.clock.now() - TimeDelta::minutes(1);
    wf.attach_physician(&id).await;
    for subject in [
        json!({"kind": "physician", "practitioner": e}),
        json!({"kind": "physician", "practitioner": "D1"}),
        json!({"kind": "patient"}),
    ] {
        wf.ok(&id, "record_verification", &doctor(), verify(subject, now))
            .await;
    }
    let (s, v) = wf.act(&id, "start", &expert(&e), json!({})).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["rules"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["rules"][0]["rule"], "CN-13", "{v}");
    wf.ok(
        &id,
        "record_verification",
        &doctor(),
        verify(json!({"kind": "guardian", "relationship": "mother"}), now),
    )
    .await;
    let v = wf.ok(&id, "start", &expert(&e), json!({})).await;
    assert_eq!(v["state"], "in-session", "{v}");
    wf.stop().await;
}
