//! The case library (issue 15 item 8) on a fixture set: completed cases go in identified and
//! are stored de-identified; search by ICD-10 prefix, department and flags; recommendations
//! for a registered expert ranked by specialty, code and recency, each with its reasons.

use chrono::{Duration, Utc};
use huizhen_core::config::workflow::WorkflowConfig;
use huizhen_core::security::Role;
use huizhen_domain::case_library::{CaseFlags, CompletedCase, PatientFacts};
use huizhen_domain::expert::IcdCode;
use serde_json::Value;

use super::{Api, expert, token};
use crate::support::{Backend, both_backends};

both_backends!(case_library_search_and_recommend);

/// A completed case `days` ago.
fn case(id: &str, department: &str, codes: &[&str], days: i64, flags: CaseFlags) -> CompletedCase {
    CompletedCase {
        consultation_id: id.into(),
        completed_at: Utc::now() - Duration::days(days),
        department: department.into(),
        diagnoses: codes.iter().map(|c| IcdCode::parse(c).unwrap()).collect(),
        flags,
        patient: PatientFacts {
            name: "王小明".into(),
            id_numbers: vec!["110101199003071234".into()],
            phones: vec!["13800138000".into()],
            address: Some("北京市朝阳区望京路1号".into()),
            birth_date: "1990-03-07".parse().ok(),
        },
        summary: "王小明，电话13800138000，胸痛三天，血压140/90mmHg。".into(),
        opinion: "建议冠脉造影，住北京市朝阳区望京路1号者就近复查。".into(),
        expert_id: "E-lib".into(),
    }
}

fn ids(v: &Value, list: &str, field: &str) -> Vec<String> {
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[field].as_str().unwrap().to_owned())
        .collect()
}

async fn case_library_search_and_recommend(backend: Backend) {
    let Some(api) = Api::start(backend, WorkflowConfig::default(), &[]).await else {
        return;
    };
    let store = api.engine.store.clone();
    let rare = CaseFlags {
        rare_disease: true,
        ..CaseFlags::default()
    };
    let emergency = CaseFlags {
        emergency: true,
        ..CaseFlags::default()
    };
    let fixtures = [
        case("k1", "03.02", &["I25.10"], 10, CaseFlags::default()),
        case("k2", "03.02", &["I25.1"], 400, rare),
        case("k3", "03.04", &["I50.0"], 5, emergency),
        case("k4", "04.01", &["K29.7"], 1, rare),
        case("k5", "03.02", &["E11.9", "I10"], 30, CaseFlags::default()),
        case("k6", "05", &["I25.10"], 2, CaseFlags::default()),
    ];
    for c in &fixtures {
        assert_eq!(store.case_library_add(c, None).await.unwrap(), Ok(true));
    }
    assert_eq!(
        store.case_library_add(&fixtures[0], None).await.unwrap(),
        Ok(false),
        "added once"
    );
    let mut blank = fixtures[0].clone();
    blank.consultation_id = "k9".into();
    blank.diagnoses.clear();
    assert!(
        store.case_library_add(&blank, None).await.unwrap().is_err(),
        "no diagnosis"
    );

    // Nothing identifying is stored.
    let pool = sqlx::AnyPool::connect(&api.db.url).await.unwrap();
    let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM case_library")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(bodies.len(), 6);
    for b in &bodies {
        for leak in [
            "王小明",
            "110101199003071234",
            "13800138000",
            "望京路",
            "1990-03-07",
        ] {
            assert!(!b.contains(leak), "{leak} in {b}");
        }
    }

    let doctor = token("dr-1", Role::LocalDoctor, "H-COUNTY-1");
    let search = |q: &'static str| {
        let (api, doctor) = (&api, &doctor);
        async move {
            let (st, v) = api.get(&format!("/api/cases{q}"), doctor).await;
            assert_eq!(st, 200, "{q}: {v}");
            ids(&v, "cases", "case_id")
        }
    };
    // Most recent first.
    assert_eq!(search("?icd=I25").await, ["k6", "k1", "k2"]);
    assert_eq!(search("?icd=i25.1").await, ["k6", "k1", "k2"]);
    assert_eq!(search("?icd=I2&department=03").await, ["k1", "k2"]);
    assert_eq!(search("?department=03.02").await, ["k1", "k5", "k2"]);
    assert_eq!(search("?flag=rare").await, ["k4", "k2"]);
    assert_eq!(
        search("?flag=rare&flag=emergency").await,
        Vec::<String>::new()
    );
    assert_eq!(search("?icd=I&limit=2").await, ["k6", "k3"]);
    let (st, v) = api.get("/api/cases?icd=I25", &doctor).await;
    assert_eq!(st, 200);
    let k1 = &v["cases"][1];
    let band = huizhen_domain::case_library::AgeBand::at(
        "1990-03-07".parse().unwrap(),
        (Utc::now() - Duration::days(10)).date_naive(),
    )
    .unwrap();
    assert_eq!(k1["age_band"], serde_json::json!({ "from": band.from }));
    assert!(
        k1["summary"]
            .as_str()
            .unwrap()
            .starts_with("[姓名]，电话[号码]"),
        "{k1}"
    );
    let (st, v) = api.get("/api/cases?icd=心", &doctor).await;
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("`心`"), "{v}");
    assert_eq!(api.get("/api/cases?flag=famous", &doctor).await.0, 400);
    assert_eq!(api.get("/api/cases?sort=new", &doctor).await.0, 400);

    // Recommendations for a registered cardiologist (03.02, expertise I25.1).
    store
        .upsert_experts(
            &[expert("E-rec", "H-CITY-1", &["03.02"], &["I25.1"], &[])],
            &[],
            None,
        )
        .await
        .unwrap();
    let cardiologist = token("E-rec", Role::Expert, "H-CITY-1");
    let (st, v) = api.get("/api/cases/recommend", &cardiologist).await;
    assert_eq!(st, 200, "{v}");
    // Weights 0.3 specialty, 0.5 code, 0.2 recency (half-life 365 days):
    // k2 = 0.3 (03.02) + 0.5 (same code I25.1) + 0.2·0.5^(400/365) ≈ 0.894;
    // k1 = 0.3 + 0.5·0.6 (same category, I25.10) + 0.2·0.5^(10/365) ≈ 0.796;
    // k5 = 0.3 + 0.5·0.3 (I10: same chapter) + 0.2·0.5^(30/365) ≈ 0.639;
    // k6 = 0 (department 05) + 0.3 (same category) + 0.2·0.5^(2/365) ≈ 0.499;
    // k3 = 0.3·0.5 (shares 03) + 0.15 (I50: same chapter) + 0.2·0.5^(5/365) ≈ 0.498;
    // k4 (04.01, K29) has neither a specialty nor a code match.
    assert_eq!(
        ids(&v, "recommendations", "case_id"),
        ["k2", "k1", "k5", "k6", "k3"]
    );
    let top = &v["recommendations"][0];
    let reasons: Vec<&str> = top["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["specialty", "code", "recency"]);
    assert!(
        top["reasons"][1]["detail"]
            .as_str()
            .unwrap()
            .contains("same code"),
        "{top}"
    );
    // For a code at hand (I50.0) and a limit.
    let (_, v) = api
        .get("/api/cases/recommend?icd=I50.0&limit=2", &cardiologist)
        .await;
    assert_eq!(ids(&v, "recommendations", "case_id"), ["k3", "k1"]);
    // A clinician asks for themself only; a coordinator for anyone; an unregistered doctor
    // describes themself.
    assert_eq!(
        api.get("/api/cases/recommend?doctor=E-other", &cardiologist)
            .await
            .0,
        403
    );
    let (st, v) = api
        .get(
            "/api/cases/recommend?doctor=E-rec",
            &token("c", Role::Integrator, "*"),
        )
        .await;
    assert_eq!((st, ids(&v, "recommendations", "case_id").len()), (200, 5));
    assert_eq!(api.get("/api/cases/recommend", &doctor).await.0, 422);
    let (st, v) = api
        .get("/api/cases/recommend?department=04&icd=K29.7", &doctor)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(ids(&v, "recommendations", "case_id"), ["k4"]);
    api.stop().await;
}
