//! The library: de-identified records, searched by ICD-10 prefix, department and flags, and
//! recommended to a doctor with the reasons for each recommendation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use super::deid::{CaseFlags, CaseRecord, CompletedCase, DeidError, deidentify};
use super::similarity::best_match;
use crate::expert::icd::IcdCode;

/// A search of the library. Every criterion given must hold; none given: every record.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseQuery {
    /// An ICD-10 code prefix (`I2`, `I25`, `i25.1`): some diagnosis starts with it.
    #[serde(default)]
    pub icd10_prefix: Option<String>,
    /// A department; `03` also finds cases in `03.02`.
    #[serde(default)]
    pub department: Option<String>,
    /// Flags every result must have.
    #[serde(default)]
    pub flags: CaseFlags,
}

/// A doctor the library recommends cases to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoctorProfile {
    /// The doctor (a Practitioner id).
    pub doctor_id: String,
    /// The doctor's departments.
    pub departments: Vec<String>,
    /// The doctor's declared expertise (ICD-10 codes or categories).
    #[serde(default)]
    pub expertise: Vec<IcdCode>,
}

/// What the doctor is looking at now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendQuery {
    /// The codes of the case at hand; empty: the doctor's declared expertise is used.
    #[serde(default)]
    pub icd10: Vec<IcdCode>,
    /// Flags every recommended case must have.
    #[serde(default)]
    pub flags: CaseFlags,
    /// At most this many recommendations. Default 10.
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn default_limit() -> usize {
    10
}

impl Default for RecommendQuery {
    fn default() -> Self {
        RecommendQuery {
            icd10: Vec::new(),
            flags: CaseFlags::default(),
            limit: default_limit(),
        }
    }
}

/// The weights of the three reasons and the recency half-life.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecommendWeights {
    /// Weight of the specialty match. Default 0.3.
    pub specialty: f64,
    /// Weight of the code similarity. Default 0.5.
    pub code: f64,
    /// Weight of recency. Default 0.2.
    pub recency: f64,
    /// Days after which recency counts half. Default 365.
    pub half_life_days: u32,
}

impl Default for RecommendWeights {
    fn default() -> Self {
        RecommendWeights {
            specialty: 0.3,
            code: 0.5,
            recency: 0.2,
            half_life_days: 365,
        }
    }
}

/// Which reason a contribution comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReasonKind {
    /// The case's department against the doctor's.
    Specialty,
    /// The case's diagnoses against the codes asked for.
    Code,
    /// How recently the case was completed.
    Recency,
}

/// One reason of a recommendation: the component (0 to 1), its weighted contribution to the
/// score, and a text for people.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// Which reason.
    pub kind: ReasonKind,
    /// The component, 0 to 1.
    pub value: f64,
    /// weight × value: what it adds to the score.
    pub contribution: f64,
    /// Why, for people (`department 03.02 is yours`, `I25.10: same code as I25.10`).
    pub detail: String,
}

/// A recommended case with its score (the sum of the contributions) and reasons.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// The case.
    pub case_id: String,
    /// The score.
    pub score: f64,
    /// Specialty, code and recency, in that order (only those that contribute).
    pub reasons: Vec<Reason>,
}

/// Why a search or a recommendation cannot run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CaseLibraryError {
    /// The ICD-10 prefix is not one (a letter, then digits and letters).
    #[error(
        "icd10_prefix `{0}` is not an ICD-10 code prefix (a letter, then digits, e.g. I2, I25.1)"
    )]
    Prefix(String),
    /// A weight is negative or not a number, or all are zero, or the half-life is zero.
    #[error("recommend weights: {0}")]
    Weights(String),
    /// A record with the same id is in the library.
    #[error("case `{0}` is already in the library")]
    Duplicate(String),
    /// The case could not be de-identified.
    #[error(transparent)]
    Deid(#[from] DeidError),
}

/// Normalises a code prefix as [`IcdCode`] does (case, dots, full width); checks its shape.
fn normalise_prefix(text: &str) -> Result<String, CaseLibraryError> {
    let norm: String = text
        .nfkc()
        .filter(|c| !matches!(c, '.' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let b = norm.as_bytes();
    let ok = !b.is_empty()
        && b[0].is_ascii_uppercase()
        && b[1..].iter().take(2).all(u8::is_ascii_digit)
        && b.iter().all(u8::is_ascii_alphanumeric);
    if ok {
        Ok(norm)
    } else {
        Err(CaseLibraryError::Prefix(text.trim().to_owned()))
    }
}

/// True when `department` is `wanted` or below it (`03.02` is below `03`, `030` is not).
fn in_department(department: &str, wanted: &str) -> bool {
    let (d, w) = (department.trim(), wanted.trim());
    d == w || (d.len() > w.len() && d.starts_with(w) && d[w.len()..].starts_with('.'))
}

/// The top-level segment of a department code (`03` of `03.02`).
fn top_level(department: &str) -> &str {
    let d = department.trim();
    d.split('.').next().unwrap_or(d)
}

impl RecommendWeights {
    /// Refuses weights that cannot rank (negative, not finite, all zero; half-life 0).
    pub fn validate(&self) -> Result<(), CaseLibraryError> {
        let named = [
            ("specialty", self.specialty),
            ("code", self.code),
            ("recency", self.recency),
        ];
        if let Some((name, w)) = named.iter().find(|(_, w)| !w.is_finite() || *w < 0.0) {
            return Err(CaseLibraryError::Weights(format!(
                "{name} {w} is not a finite number ≥ 0"
            )));
        }
        if named.iter().all(|(_, w)| *w == 0.0) {
            return Err(CaseLibraryError::Weights("all weights are 0".into()));
        }
        if self.half_life_days == 0 {
            return Err(CaseLibraryError::Weights("half_life_days is 0".into()));
        }
        Ok(())
    }
}

/// The de-identified cases and the recommendation weights.
#[derive(Clone, Debug, Default)]
pub struct CaseLibrary {
    records: Vec<CaseRecord>,
    weights: RecommendWeights,
}

impl CaseLibrary {
    /// An empty library with the default weights.
    pub fn new() -> CaseLibrary {
        CaseLibrary::default()
    }

    /// An empty library ranking with `weights`; refuses weights that cannot rank.
    pub fn with_weights(weights: RecommendWeights) -> Result<CaseLibrary, CaseLibraryError> {
        weights.validate()?;
        Ok(CaseLibrary {
            records: Vec::new(),
            weights,
        })
    }

    /// The recommendation weights.
    pub fn weights(&self) -> &RecommendWeights {
        &self.weights
    }

    /// De-identifies `case` and adds it; returns the record stored.
    pub fn add_case(&mut self, case: &CompletedCase) -> Result<&CaseRecord, CaseLibraryError> {
        let record = deidentify(case)?;
        self.add_record(record)
    }

    /// Adds an already de-identified record (as the store loads them).
    pub fn add_record(&mut self, record: CaseRecord) -> Result<&CaseRecord, CaseLibraryError> {
        if self.records.iter().any(|r| r.case_id == record.case_id) {
            return Err(CaseLibraryError::Duplicate(record.case_id));
        }
        self.records.push(record);
        Ok(self.records.last().expect("just pushed"))
    }

    /// Every record, in insertion order.
    pub fn records(&self) -> &[CaseRecord] {
        &self.records
    }

    /// The records matching `query`, most recent first, then by id.
    pub fn search(&self, query: &CaseQuery) -> Result<Vec<&CaseRecord>, CaseLibraryError> {
        let prefix = query
            .icd10_prefix
            .as_deref()
            .map(normalise_prefix)
            .transpose()?;
        let mut found: Vec<&CaseRecord> = self
            .records
            .iter()
            .filter(|r| r.flags.includes(query.flags))
            .filter(|r| {
                query
                    .department
                    .as_deref()
                    .is_none_or(|d| in_department(&r.department, d))
            })
            .filter(|r| {
                prefix
                    .as_deref()
                    .is_none_or(|p| r.diagnoses.iter().any(|c| c.normalized().starts_with(p)))
            })
            .collect();
        found.sort_by(|a, b| {
            b.completed_on
                .cmp(&a.completed_on)
                .then_with(|| a.case_id.cmp(&b.case_id))
        });
        Ok(found)
    }

    /// Cases for `doctor`, ranked by specialty match, code similarity and recency at `now`,
    /// each with its reasons; a case with neither a specialty nor a code match is not
    /// recommended. Ties are broken by case id, so the order is deterministic.
    pub fn recommend(
        &self,
        doctor: &DoctorProfile,
        query: &RecommendQuery,
        now: DateTime<Utc>,
    ) -> Vec<Recommendation> {
        let weights = &self.weights;
        let wanted: &[IcdCode] = if query.icd10.is_empty() {
            &doctor.expertise
        } else {
            &query.icd10
        };
        let mut out: Vec<Recommendation> = self
            .records
            .iter()
            .filter(|r| r.flags.includes(query.flags))
            .filter_map(|r| score(r, doctor, wanted, weights, now))
            .collect();
        out.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.case_id.cmp(&b.case_id))
        });
        out.truncate(query.limit);
        out
    }
}

fn specialty(record: &CaseRecord, doctor: &DoctorProfile) -> Option<(f64, String)> {
    if let Some(d) = doctor
        .departments
        .iter()
        .find(|d| in_department(&record.department, d))
    {
        return Some((
            1.0,
            format!("department {} is within yours ({d})", record.department),
        ));
    }
    doctor
        .departments
        .iter()
        .find(|d| top_level(d) == top_level(&record.department))
        .map(|d| {
            (
                0.5,
                format!(
                    "department {} shares {} with yours ({d})",
                    record.department,
                    top_level(d)
                ),
            )
        })
}

fn score(
    record: &CaseRecord,
    doctor: &DoctorProfile,
    wanted: &[IcdCode],
    weights: &RecommendWeights,
    now: DateTime<Utc>,
) -> Option<Recommendation> {
    let mut reasons = Vec::new();
    let mut push = |kind, value: f64, weight: f64, detail: String| {
        if value > 0.0 && weight > 0.0 {
            reasons.push(Reason {
                kind,
                value,
                contribution: weight * value,
                detail,
            });
        }
    };
    let spec = specialty(record, doctor);
    let code = best_match(wanted, &record.diagnoses);
    if spec.is_none() && code.is_none() {
        return None;
    }
    if let Some((value, detail)) = spec {
        push(ReasonKind::Specialty, value, weights.specialty, detail);
    }
    if let Some((m, w, h)) = code {
        let detail = format!("{h}: {} as {w}", m.as_str());
        push(ReasonKind::Code, m.value(), weights.code, detail);
    }
    let age_days = (now.date_naive() - record.completed_on).num_days().max(0);
    let recency = 0.5_f64.powf(age_days as f64 / f64::from(weights.half_life_days));
    push(
        ReasonKind::Recency,
        recency,
        weights.recency,
        format!("completed {age_days} days ago"),
    );
    let score = reasons.iter().map(|r| r.contribution).sum();
    Some(Recommendation {
        case_id: record.case_id.clone(),
        score,
        reasons,
    })
}
