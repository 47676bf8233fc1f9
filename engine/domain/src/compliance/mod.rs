//! China rules as configuration (STANDARDS §4): what a consultation of each service type
//! (CN-01) needs, per facility, never below what the law requires.
//!
//! | Rule | Setting | Law's floor |
//! |---|---|---|
//! | CN-01 the facility offers the service type | `offered` | — (a facility may offer fewer) |
//! | CN-02 a cooperation agreement in force, of the requesting facility | `agreement` | institution-to-institution |
//! | CN-05 informed consent before the session | `consent` | every type |
//! | CN-06 an accompanying local physician, verified | `local_physician` | institution-to-institution |
//! | CN-10 prior-diagnosis evidence (no first visits online) | `prior_diagnosis` | direct-to-patient |
//! | CN-11 the expert's real-name verification before each session | `verification_max_age_minutes` | every type (any age) |
//! | CN-12 the patient's real-name verification | `patient_verification` | direct-to-patient, internet hospital |
//! | CN-13 a child under N: a verified guardian and a verified physician present | `guardian_under_years` | 6 |
//!
//! A setting can add a requirement or tighten one (a shorter verification age, an older age
//! limit for the guardian rule); turning off what the law requires is a configuration error
//! naming the rule. CN-03 (the invitation's content) is the request's own validation
//! ([`crate::consultation::ConsultationRequest::validate`]): every type needs it.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::consultation::ServiceType;
use crate::expert::Agreement;

pub mod retention;
#[cfg(test)]
mod tests;

/// One service type's settings as written (`compliance.service_types.<type>` or a facility's
/// override): every field optional, `None` keeps what the level below says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// CN-01: whether the facility offers this service type.
    #[serde(default)]
    pub offered: Option<bool>,
    /// CN-02.
    #[serde(default)]
    pub agreement: Option<bool>,
    /// CN-05.
    #[serde(default)]
    pub consent: Option<bool>,
    /// CN-06.
    #[serde(default)]
    pub local_physician: Option<bool>,
    /// CN-10.
    #[serde(default)]
    pub prior_diagnosis: Option<bool>,
    /// CN-12.
    #[serde(default)]
    pub patient_verification: Option<bool>,
    /// CN-11, CN-12: how old a passed verification may be when the session starts, minutes
    /// (1 to 10080); none: any passed verification of this consultation counts.
    #[serde(default)]
    pub verification_max_age_minutes: Option<u32>,
    /// CN-13: patients younger than this many years need a verified guardian and a verified
    /// physician (6 to 18).
    #[serde(default)]
    pub guardian_under_years: Option<u32>,
}

/// The China rules of the engine (`compliance:` in huizhen.yaml).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComplianceConfig {
    /// Per service type (`institution-to-institution`, `direct-to-patient`,
    /// `internet-hospital`), for every facility.
    #[serde(default)]
    pub service_types: BTreeMap<ServiceType, RulesConfig>,
    /// Per requesting facility, per service type: overrides of the above.
    #[serde(default)]
    pub facilities: BTreeMap<String, BTreeMap<ServiceType, RulesConfig>>,
    /// Per record class (CN-30): how long its records are kept, at least the law's minimum.
    #[serde(default)]
    pub retention: BTreeMap<retention::RecordClass, retention::ClassRetention>,
}

/// The rules that apply to one consultation: its service type at its requesting facility.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rules {
    /// The service type.
    pub service_type: ServiceType,
    /// CN-01.
    pub offered: bool,
    /// CN-02.
    pub agreement: bool,
    /// CN-05.
    pub consent: bool,
    /// CN-06.
    pub local_physician: bool,
    /// CN-10.
    pub prior_diagnosis: bool,
    /// CN-12.
    pub patient_verification: bool,
    /// CN-11, CN-12.
    pub verification_max_age_minutes: Option<u32>,
    /// CN-13.
    pub guardian_under_years: u32,
}

/// The youngest age without the guardian rule the law allows (CN-13: children under 6).
pub const GUARDIAN_UNDER_YEARS: u32 = 6;

impl Rules {
    /// What the law requires of `service_type` (the defaults).
    pub fn statutory(service_type: ServiceType) -> Rules {
        let i2i = service_type == ServiceType::InstitutionToInstitution;
        let d2p = service_type == ServiceType::DirectToPatient;
        Rules {
            service_type,
            offered: true,
            agreement: i2i,
            consent: true,
            local_physician: i2i,
            prior_diagnosis: d2p,
            patient_verification: !i2i,
            verification_max_age_minutes: None,
            guardian_under_years: GUARDIAN_UNDER_YEARS,
        }
    }

    /// `self` with `c`'s settings applied; turning off or loosening what the law requires is
    /// refused with the rule and the setting's path under `at`.
    fn apply(mut self, c: &RulesConfig, at: &str) -> Result<Rules, ComplianceError> {
        let law = Rules::statutory(self.service_type);
        let flag = |target: &mut bool, value: Option<bool>, floor: bool, name, rule| {
            if let Some(v) = value {
                if floor && !v {
                    return Err(ComplianceError {
                        path: format!("{at}.{name}"),
                        rule,
                        problem: format!(
                            "cannot be turned off for {}: the law requires it",
                            self.service_type.code()
                        ),
                    });
                }
                *target = v;
            }
            Ok(())
        };
        flag(&mut self.offered, c.offered, false, "offered", "CN-01")?;
        flag(
            &mut self.agreement,
            c.agreement,
            law.agreement,
            "agreement",
            "CN-02",
        )?;
        flag(
            &mut self.consent,
            c.consent,
            law.consent,
            "consent",
            "CN-05",
        )?;
        flag(
            &mut self.local_physician,
            c.local_physician,
            law.local_physician,
            "local_physician",
            "CN-06",
        )?;
        flag(
            &mut self.prior_diagnosis,
            c.prior_diagnosis,
            law.prior_diagnosis,
            "prior_diagnosis",
            "CN-10",
        )?;
        flag(
            &mut self.patient_verification,
            c.patient_verification,
            law.patient_verification,
            "patient_verification",
            "CN-12",
        )?;
        if let Some(m) = c.verification_max_age_minutes {
            if !(1..=10_080).contains(&m) {
                return Err(ComplianceError {
                    path: format!("{at}.verification_max_age_minutes"),
                    rule: "CN-11",
                    problem: format!("{m} is outside 1 to 10080 minutes"),
                });
            }
            self.verification_max_age_minutes = Some(
                self.verification_max_age_minutes
                    .map_or(m, |old| old.min(m)),
            );
        }
        if let Some(y) = c.guardian_under_years {
            if !(GUARDIAN_UNDER_YEARS..=18).contains(&y) {
                return Err(ComplianceError {
                    path: format!("{at}.guardian_under_years"),
                    rule: "CN-13",
                    problem: format!("{y} is outside {GUARDIAN_UNDER_YEARS} to 18 years"),
                });
            }
            self.guardian_under_years = y;
        }
        Ok(self)
    }
}

/// A setting of `compliance:` that cannot be: its path, the rule and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem} ({rule})")]
pub struct ComplianceError {
    /// The setting's path (`compliance.facilities.clinic-a.direct-to-patient.consent`).
    pub path: String,
    /// The rule (`CN-05`).
    pub rule: &'static str,
    /// What is wrong.
    pub problem: String,
}

/// The checked rules: every facility's and service type's [`Rules`], and the retention
/// periods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompliancePolicy {
    base: BTreeMap<ServiceType, Rules>,
    facilities: BTreeMap<String, BTreeMap<ServiceType, Rules>>,
    retention: retention::RetentionPolicy,
}

impl Default for CompliancePolicy {
    /// What the law requires, everywhere.
    fn default() -> Self {
        CompliancePolicy::new(&ComplianceConfig::default()).expect("the statutory rules hold")
    }
}

impl CompliancePolicy {
    /// Checks `config` against the law's floors and resolves it.
    pub fn new(config: &ComplianceConfig) -> Result<CompliancePolicy, ComplianceError> {
        let mut base = BTreeMap::new();
        for t in ServiceType::ALL {
            let law = Rules::statutory(t);
            let rules = match config.service_types.get(&t) {
                Some(c) => law.apply(c, &format!("compliance.service_types.{}", t.code()))?,
                None => law,
            };
            base.insert(t, rules);
        }
        let mut facilities = BTreeMap::new();
        for (facility, types) in &config.facilities {
            if facility.trim().is_empty() {
                return Err(ComplianceError {
                    path: "compliance.facilities".into(),
                    rule: "CN-01",
                    problem: "a facility id is blank".into(),
                });
            }
            let mut resolved = BTreeMap::new();
            for (t, c) in types {
                let at = format!("compliance.facilities.{facility}.{}", t.code());
                resolved.insert(*t, base[t].apply(c, &at)?);
            }
            facilities.insert(facility.clone(), resolved);
        }
        let retention = retention::RetentionPolicy::new(&config.retention, "compliance.retention")
            .map_err(|e| ComplianceError {
                path: e.path.clone(),
                rule: "CN-30",
                problem: format!(
                    "{} months is below the minimum of {} months for {} records",
                    e.keep, e.minimum, e.class
                ),
            })?;
        Ok(CompliancePolicy {
            base,
            facilities,
            retention,
        })
    }

    /// The retention periods (CN-30).
    pub fn retention(&self) -> &retention::RetentionPolicy {
        &self.retention
    }

    /// The rules of a consultation of `service_type` requested by `facility`.
    pub fn rules(&self, facility: &str, service_type: ServiceType) -> Rules {
        self.facilities
            .get(facility.trim())
            .and_then(|m| m.get(&service_type))
            .or_else(|| self.base.get(&service_type))
            .copied()
            .unwrap_or_else(|| Rules::statutory(service_type))
    }
}

/// Why a consultation cannot be created under its rules (CN-01, CN-02); the `Display` names
/// the rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum CreateRefusal {
    /// CN-01.
    #[error("facility `{facility}` does not offer {service_type} consultations (CN-01)")]
    NotOffered {
        /// The requesting facility.
        facility: String,
        /// The service type's code.
        service_type: &'static str,
    },
    /// CN-02: the request names no agreement.
    #[error("{service_type} consultations need a cooperation agreement (远程医疗合作协议) (CN-02)")]
    NoAgreement {
        /// The service type's code.
        service_type: &'static str,
    },
    /// CN-02: the named agreement is not one of the requesting facility's.
    #[error(
        "agreement `{agreement}` is not a cooperation agreement of facility `{facility}` (CN-02)"
    )]
    UnknownAgreement {
        /// The agreement id.
        agreement: String,
        /// The requesting facility.
        facility: String,
    },
    /// CN-02: the agreement is not in force today.
    #[error("agreement `{agreement}` is not in force on {today}: {window} (CN-02)")]
    AgreementNotInForce {
        /// The agreement id.
        agreement: String,
        /// Today (local date).
        today: NaiveDate,
        /// Its validity, as text.
        window: String,
    },
}

impl CreateRefusal {
    /// The rule refused under.
    pub fn rule(&self) -> &'static str {
        match self {
            CreateRefusal::NotOffered { .. } => "CN-01",
            _ => "CN-02",
        }
    }
}

/// Checks a new consultation of `service_type` from `facility` naming `agreement` against its
/// `rules` (CN-01, CN-02). `agreements` are the requesting facility's (the registry's);
/// `today` is the local date.
pub fn check_create(
    rules: &Rules,
    facility: &str,
    agreement: Option<&str>,
    agreements: &[Agreement],
    today: NaiveDate,
) -> Result<(), CreateRefusal> {
    let service_type = rules.service_type.code();
    if !rules.offered {
        return Err(CreateRefusal::NotOffered {
            facility: facility.trim().to_owned(),
            service_type,
        });
    }
    let Some(id) = agreement.map(str::trim).filter(|a| !a.is_empty()) else {
        return if rules.agreement {
            Err(CreateRefusal::NoAgreement { service_type })
        } else {
            Ok(())
        };
    };
    let Some(a) = agreements
        .iter()
        .find(|a| a.id.trim() == id && a.requesting_facility.trim() == facility.trim())
    else {
        return Err(CreateRefusal::UnknownAgreement {
            agreement: id.to_owned(),
            facility: facility.trim().to_owned(),
        });
    };
    if !a.is_active_on(today) {
        return Err(CreateRefusal::AgreementNotInForce {
            agreement: id.to_owned(),
            today,
            window: match a.valid_to {
                Some(until) => format!("valid {} to {until}", a.valid_from),
                None => format!("valid from {}", a.valid_from),
            },
        });
    }
    Ok(())
}

/// Whole years of age on `today` of someone born on `birth` (none before the birth).
pub fn age_in_years(birth: NaiveDate, today: NaiveDate) -> Option<u32> {
    if today < birth {
        return None;
    }
    let mut years = today.year() - birth.year();
    if (today.month(), today.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    u32::try_from(years).ok()
}

/// What the session-start check knows besides the consultation's own records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartFacts {
    /// Now.
    pub now: DateTime<Utc>,
    /// The patient's birth date, when the identity index has one.
    pub birth_date: Option<NaiveDate>,
    /// Today's local date (for the age).
    pub today: NaiveDate,
}

impl StartFacts {
    /// The earliest verification time that still counts under `rules`.
    pub fn verified_since(&self, rules: &Rules) -> Option<DateTime<Utc>> {
        rules
            .verification_max_age_minutes
            .map(|m| self.now - Duration::minutes(i64::from(m)))
    }

    /// True when the patient is a child under the guardian rule's age.
    pub fn is_minor(&self, rules: &Rules) -> bool {
        self.birth_date
            .and_then(|b| age_in_years(b, self.today))
            .is_some_and(|age| age < rules.guardian_under_years)
    }
}

impl fmt::Display for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.service_type.code())
    }
}
