//! The scoring rule itself, in plain Rust (no SDK types), so a benchmark can compile the same
//! function natively and compare.
//!
//! - title: 主任医师 (chief physician) +50, 副主任医师 (associate chief) +30, any other 0;
//! - years of experience × 2;
//! - (30 − response minutes) × 2 (a slow responder loses points; the engine sends the median);
//! - +20 when the case is urgent (`urgent` as the engine words it, or `critical` / 危急).
//!
//! Each feature present gives one contribution; a missing feature gives none. A negative
//! number of years or minutes is an error (bad data, not a low score).

/// The case features the rule reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Case<'a> {
    pub urgency: Option<&'a str>,
}

/// The expert features the rule reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expert<'a> {
    pub title: Option<&'a str>,
    pub years: Option<f64>,
    /// Median (or, from older callers, average) minutes to accept an offer.
    pub response_minutes: Option<f64>,
}

/// Each feature's name and points.
pub type Contributions = Vec<(&'static str, f64)>;

/// The total and the contribution of each feature present.
pub fn score(case: &Case, expert: &Expert) -> Result<(f64, Contributions), String> {
    let mut parts = Vec::with_capacity(4);
    if let Some(title) = expert.title {
        let points = match title.trim() {
            "副主任医师" | "associate-chief-physician" => 30.0,
            "主任医师" | "chief-physician" => 50.0,
            _ => 0.0,
        };
        parts.push(("title", points));
    }
    if let Some(years) = expert.years {
        if !(years >= 0.0 && years.is_finite()) {
            return Err(format!("years: {years} is not a number of years"));
        }
        parts.push(("years", years * 2.0));
    }
    if let Some(minutes) = expert.response_minutes {
        if !(minutes >= 0.0 && minutes.is_finite()) {
            return Err(format!(
                "median_response_minutes: {minutes} is not a number of minutes"
            ));
        }
        parts.push(("response", (30.0 - minutes) * 2.0));
    }
    if let Some(urgency) = case.urgency {
        let critical = matches!(urgency.trim(), "urgent" | "critical" | "危急");
        parts.push(("urgency", if critical { 20.0 } else { 0.0 }));
    }
    Ok((parts.iter().map(|p| p.1).sum(), parts))
}
