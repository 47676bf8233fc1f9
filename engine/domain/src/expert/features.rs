//! Feature extraction (STANDARDS MATCH-02): what a scorer sees of the case and of each eligible
//! expert, as named numbers and texts. Pure: the same (case, expert, agreement, now) always
//! gives the same features, so a stored decision can be scored again.
//!
//! Case features (from [`CaseRequest`] only: no patient attribute exists to leak, MATCH-30):
//!
//! | name | value | text |
//! |---|---|---|
//! | `urgency` | 0 routine, 1 urgent or critical | `routine` / `urgent` (critical too) |
//! | `department` | 0 | the requested department |
//! | `icd10_category` | 0 | the case code's category (`I25`), when a code is given |
//! | `min_title` | rank 1–4 | Chinese title, when given |
//! | `language` | 0 | the requested language, when given |
//! | `follow_up` | 1 | –, when the case is a follow-up |
//!
//! Expert features (one list per eligible expert):
//!
//! | name | value | text |
//! |---|---|---|
//! | `title` | rank 1 (住院医师) – 4 (主任医师) | Chinese title (what the reference plugin reads) |
//! | `years` | whole years of independent practice | – |
//! | `specificity` | 0 department only, 1 category, 2 subcategory, 3 exact | the level |
//! | `open_consultations` | count | – |
//! | `sessions_today` | count | – |
//! | `load` | open consultations ÷ load cap, 0 to 1 | – |
//! | `median_response_minutes` | minutes, when there is history | – |
//! | `acceptance_rate` | 0 to 1, when there is history | – |
//! | `response_count` | offers in the history | – |
//! | `online` | 1 online, 0 not | – |
//! | `on_call` | 1 on call, 0 not | – |
//! | `relationship` | priority 0–1 of the agreement kind (1 same facility) | kind code |
//! | `language` | 1 speaks the requested language, 0 not (when one is requested) | the language |
//! | `continuity` | 1 the follow-up's earlier expert, 0 not (when a follow-up) | – |
//! | `preferred` | 1 the preferred expert, 0 not (when one is named) | – |

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::case::CaseRequest;
use super::config::MatchConfig;
use super::filter::{Eligible, relationship};

/// A named feature: a number and, for categorical features, a text. The same record as the
/// `feature` of the WIT `scorer` world.
///
/// Names and most texts are fixed words (`title`, `主任医师`), so they are borrowed
/// (`Cow::Borrowed` of a `&'static str`) rather than allocated for every candidate of every
/// case; a feature read back from JSON owns its strings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    /// The feature name (see the module tables).
    pub name: Cow<'static, str>,
    /// The number.
    pub value: f64,
    /// The text, for categorical features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Cow<'static, str>>,
}

impl Feature {
    /// A numeric feature. A `&'static str` name is borrowed, a `String` moved in.
    pub fn num(name: impl Into<Cow<'static, str>>, value: f64) -> Feature {
        Feature {
            name: name.into(),
            value,
            text: None,
        }
    }

    /// A feature with a text (and a number).
    pub fn text(
        name: impl Into<Cow<'static, str>>,
        value: f64,
        text: impl Into<Cow<'static, str>>,
    ) -> Feature {
        Feature {
            name: name.into(),
            value,
            text: Some(text.into()),
        }
    }
}

/// The feature called `name`, if present.
pub fn feature<'a>(features: &'a [Feature], name: &str) -> Option<&'a Feature> {
    features.iter().find(|f| f.name == name)
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The case's features (see the module table).
pub fn case_features(case: &CaseRequest) -> Vec<Feature> {
    let mut out = Vec::with_capacity(6);
    // The scorer contract keeps two values: a critical case is `urgent` to a plugin, as it
    // always was (the number is the stable signal).
    let urgent = case.urgency.is_urgent();
    out.push(Feature::text(
        "urgency",
        flag(urgent),
        if urgent { "urgent" } else { "routine" },
    ));
    out.push(Feature::text(
        "department",
        0.0,
        case.department.trim().to_owned(),
    ));
    if let Some(code) = &case.icd10 {
        out.push(Feature::text(
            "icd10_category",
            0.0,
            code.category().to_owned(),
        ));
    }
    if let Some(t) = case.min_title {
        out.push(Feature::text("min_title", t.rank(), t.chinese()));
    }
    if let Some(l) = &case.language {
        out.push(Feature::text("language", 0.0, l.trim().to_owned()));
    }
    if case.follow_up_of.is_some() {
        out.push(Feature::num("follow_up", 1.0));
    }
    out
}

/// The features of one eligible expert for the case at `now` (see the module table). Numbers
/// from stored history are sanitised (a rate outside 0..1 is clamped; a missing median gives
/// no feature), so every value is finite.
pub fn expert_features(
    case: &CaseRequest,
    eligible: &Eligible<'_>,
    config: &MatchConfig,
    now: DateTime<Utc>,
) -> Vec<Feature> {
    let e = eligible.expert;
    let mut out = Vec::with_capacity(15);
    out.push(Feature::text("title", e.title.rank(), e.title.chinese()));
    out.push(Feature::num("years", f64::from(eligible.practice_years)));
    out.push(Feature::text(
        "specificity",
        eligible.specificity.value(),
        eligible.specificity.as_str(),
    ));
    out.push(Feature::num(
        "open_consultations",
        f64::from(e.load.open_consultations),
    ));
    out.push(Feature::num(
        "sessions_today",
        f64::from(e.load.sessions_today),
    ));
    let cap = f64::from(config.max_open_consultations.max(1));
    out.push(Feature::num(
        "load",
        (f64::from(e.load.open_consultations) / cap).min(1.0),
    ));
    let history = &e.response;
    if history.count > 0 {
        if let Some(s) = history.median_accept_seconds {
            out.push(Feature::num("median_response_minutes", f64::from(s) / 60.0));
        }
        if let Some(r) = history.acceptance_rate.filter(|r| r.is_finite()) {
            out.push(Feature::num("acceptance_rate", r.clamp(0.0, 1.0)));
        }
    }
    out.push(Feature::num("response_count", f64::from(history.count)));
    out.push(Feature::num(
        "online",
        flag(e.presence.is_online(now, config.presence_staleness_seconds)),
    ));
    out.push(Feature::num("on_call", flag(e.schedule.on_call)));
    let (priority, kind) = relationship(eligible.agreement);
    out.push(Feature::text("relationship", priority, kind));
    if let Some(l) = &case.language {
        out.push(Feature::text(
            "language",
            flag(e.speaks(l)),
            l.trim().to_owned(),
        ));
    }
    let is = |x: &Option<String>| x.as_deref().map(|x| x.trim() == e.id.trim());
    if let Some(same) = is(&case.follow_up_of) {
        out.push(Feature::num("continuity", flag(same)));
    }
    if let Some(same) = is(&case.preferred_expert) {
        out.push(Feature::num("preferred", flag(same)));
    }
    out
}
