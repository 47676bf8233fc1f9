//! `/api/cases` (issue 15 item 8): the de-identified case library, searched by ICD-10 prefix,
//! department and flags, and recommended to a doctor with the reasons. The library holds no
//! patient data (the store keeps only the domain's de-identified records), so it is shared
//! across facilities, like a teaching file; nothing here is scoped or audited per read.

use huizhen_domain::case_library::{
    CaseFlags, CaseLibrary, CaseLibraryError, CaseQuery, DoctorProfile, RecommendQuery, chapter,
};
use huizhen_domain::expert::IcdCode;

use super::*;

/// The flags `flag=` takes (repeatable, or comma-separated).
fn flags(pairs: &[(String, String)]) -> Result<CaseFlags, Refusal> {
    let mut f = CaseFlags::default();
    for value in pairs.iter().filter(|(k, _)| k == "flag").map(|(_, v)| v) {
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name.to_ascii_lowercase().replace('-', "_").as_str() {
                "misdiagnosis" => f.misdiagnosis = true,
                "rare" | "rare_disease" => f.rare_disease = true,
                "emergency" => f.emergency = true,
                _ => {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "flag: {name:?} is not one of misdiagnosis, rare_disease (rare), emergency"
                        ),
                    ));
                }
            }
        }
    }
    Ok(f)
}

fn library_refusal(e: &CaseLibraryError) -> Refusal {
    Refusal(
        StatusCode::BAD_REQUEST,
        json!({ "error": e.to_string(), "field": "icd" }),
    )
}

pub(super) async fn search(State(s): State<AppState>, Query(pairs): Pairs) -> Reply {
    let pairs = params(pairs, &["icd", "department", "flag", "limit"])?;
    let query = CaseQuery {
        icd10_prefix: param(&pairs, "icd").map(str::to_owned),
        department: param(&pairs, "department").map(str::to_owned),
        flags: flags(&pairs)?,
    };
    let limit = limit(&pairs, 50, 500)?;
    let found = s
        .store
        .search_cases(&query, limit)
        .await?
        .map_err(|e| library_refusal(&e))?;
    Ok(Json(json!({ "cases": found })).into_response())
}

pub(super) async fn recommend(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(pairs): Pairs,
) -> Reply {
    let pairs = params(pairs, &["doctor", "icd", "department", "flag", "limit"])?;
    let p = &caller.principal;
    let doctor = param(&pairs, "doctor").unwrap_or(&p.sub).to_owned();
    // A clinician asks for themself; coordinators and auditors for anyone.
    if matches!(p.role, Role::Expert | Role::LocalDoctor) && doctor != p.sub {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "doctor: {} {} may ask recommendations for themself only",
                p.role, p.sub
            ),
        ));
    }
    let mut icd10 = Vec::new();
    for value in pairs.iter().filter(|(k, _)| k == "icd").map(|(_, v)| v) {
        for code in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            icd10.push(IcdCode::parse(code).map_err(|e| {
                Refusal(
                    StatusCode::BAD_REQUEST,
                    json!({ "error": format!("icd: {e}"), "field": "icd" }),
                )
            })?);
        }
    }
    let departments: Vec<String> = pairs
        .iter()
        .filter(|(k, v)| k == "department" && !v.trim().is_empty())
        .flat_map(|(_, v)| v.split(',').map(|d| d.trim().to_owned()))
        .filter(|d| !d.is_empty())
        .collect();
    // The profile: the expert registry's entry, or the departments given.
    let profile = match s.store.expert(&doctor).await? {
        Some(e) => DoctorProfile {
            doctor_id: doctor.clone(),
            departments: if departments.is_empty() {
                e.departments
            } else {
                departments
            },
            expertise: e.expertise,
        },
        None if !departments.is_empty() => DoctorProfile {
            doctor_id: doctor.clone(),
            departments,
            expertise: Vec::new(),
        },
        None => {
            return Err(Refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "error": format!("doctor: {doctor} is not in the expert registry; give department= (and icd=) to describe the doctor"), "field": "department" }),
            ));
        }
    };
    let query = RecommendQuery {
        icd10,
        flags: flags(&pairs)?,
        limit: limit(&pairs, 10, 100)?,
    };
    let wanted = if query.icd10.is_empty() {
        &profile.expertise
    } else {
        &query.icd10
    };
    let mut tops: Vec<String> = profile
        .departments
        .iter()
        .map(|d| d.trim().split('.').next().unwrap_or("").to_owned())
        .filter(|d| !d.is_empty())
        .collect();
    tops.sort_unstable();
    tops.dedup();
    let mut categories: Vec<String> = wanted.iter().map(|c| c.category().to_owned()).collect();
    categories.sort_unstable();
    categories.dedup();
    let mut chapters: Vec<u8> = wanted.iter().filter_map(chapter).collect();
    chapters.sort_unstable();
    chapters.dedup();
    let candidates = s
        .store
        .recommend_candidates(&tops, &categories, &chapters)
        .await?;
    let care = care(&s);
    let mut library = CaseLibrary::with_weights(care.weights).map_err(|e| {
        ApiError::internal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the case library's weights are invalid",
            &e,
        )
    })?;
    for record in candidates {
        // Ids are unique in the table.
        let _ = library.add_record(record);
    }
    let recommendations = library.recommend(&profile, &query, s.store.clock().now());
    Ok(Json(json!({
        "doctor": profile.doctor_id,
        "departments": profile.departments,
        "codes": wanted,
        "recommendations": recommendations,
    }))
    .into_response())
}
