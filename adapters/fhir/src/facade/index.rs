//! The search index of one resource: its terms and date ranges, extracted from the JSON along
//! the paths of [`super::table`], and FHIR date values as ranges.
//!
//! The `fhir_store` sink stores this index beside each version; the facade extracts the same
//! index from the resources it projects from the engine's own data and matches a search in
//! memory, so a parameter means the same on both.
//!
//! * tokens: a code `c` → `c`; a Coding or Identifier with system `s` → `s|c`, `c` and `s|`,
//!   without one → `|c` and `c`; a CodeableConcept → each of its codings; a boolean →
//!   `true`/`false`;
//! * references: `Type/id` and `id` (an absolute URL keeps its last two segments; `urn:` and
//!   `#contained` references are not indexed); with a target type only references to it;
//! * strings: the normalised whole words (lower case, split at spaces and punctuation), and
//!   of a HumanName also family + given written together (`张` + `伟` → `张伟`);
//! * dates: `[lo, hi)` in ms at the value's precision (a day is a day long); a value without
//!   a time zone is read as UTC; a Period from its start to its end (open ends unbounded).

use chrono::{NaiveDate, TimeZone, Utc};
use huizhen_core::store::fhir::FhirIndex;
use serde_json::Value;

use super::table::{COMMON, Kind, Param, ResourceDef};

/// The values at a dotted path (arrays walked through at every step).
pub fn walk<'a>(v: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut cur = vec![v];
    for step in path.split('.') {
        let mut next = Vec::new();
        for c in cur {
            match c.get(step) {
                Some(Value::Array(items)) => next.extend(items.iter()),
                Some(Value::Null) | None => {}
                Some(x) => next.push(x),
            }
        }
        cur = next;
    }
    cur
}

/// The index of `resource` (of type `def`).
pub fn index(def: &ResourceDef, resource: &Value) -> FhirIndex {
    let mut out = FhirIndex::default();
    for param in def
        .params
        .iter()
        .chain(COMMON.iter().filter(|p| p.name == "_id"))
    {
        extract(param, resource, &mut out);
    }
    out.patient = if def.name == "Patient" {
        resource
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
    } else {
        def.param("patient").and_then(|p| {
            p.paths
                .iter()
                .flat_map(|path| walk(resource, path))
                .filter_map(reference)
                .find(|(t, _)| t == "Patient")
                .map(|(_, id)| id)
        })
    };
    out.terms.sort();
    out.terms.dedup();
    out
}

fn extract(param: &Param, resource: &Value, out: &mut FhirIndex) {
    let name = param.name.to_owned();
    for v in param.paths.iter().flat_map(|path| walk(resource, path)) {
        match param.kind {
            Kind::Token => {
                for t in tokens(v) {
                    out.terms.push((name.clone(), t));
                }
            }
            Kind::Reference => {
                if let Some((t, id)) = reference(v)
                    && param.target.is_none_or(|target| target == t)
                {
                    out.terms.push((name.clone(), format!("{t}/{id}")));
                    out.terms.push((name.clone(), id));
                }
            }
            Kind::String => {
                for w in words_of(v) {
                    out.terms.push((name.clone(), w));
                }
            }
            Kind::Date => {
                if let Some((lo, hi)) = date_value(v) {
                    out.dates.push((name.clone(), lo, hi));
                }
            }
        }
    }
}

/// The token forms of a code, Coding, CodeableConcept, Identifier, ContactPoint or boolean.
pub fn tokens(v: &Value) -> Vec<String> {
    let pair = |system: Option<&str>, code: &str| -> Vec<String> {
        let code = code.trim();
        if code.is_empty() {
            return Vec::new();
        }
        match system.map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => vec![format!("{s}|{code}"), code.to_owned(), format!("{s}|")],
            None => vec![format!("|{code}"), code.to_owned()],
        }
    };
    match v {
        Value::String(s) => pair(None, s)
            .into_iter()
            .filter(|t| !t.starts_with('|'))
            .collect(),
        Value::Bool(b) => vec![b.to_string()],
        Value::Object(o) => {
            if let Some(Value::Array(codings)) = o.get("coding") {
                return codings.iter().flat_map(tokens).collect();
            }
            let system = o.get("system").and_then(Value::as_str);
            if let Some(code) = o.get("code").and_then(Value::as_str) {
                return pair(system, code);
            }
            if let Some(value) = o.get("value").and_then(Value::as_str) {
                return pair(system, value);
            }
            Vec::new()
        }
        _ => Vec::new(),
    }
}

/// `(type, id)` of a Reference (or of a reference text).
pub fn reference(v: &Value) -> Option<(String, String)> {
    let text = match v {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o.get("reference")?.as_str()?,
        _ => return None,
    };
    reference_text(text)
}

/// `(type, id)` of `Type/id`, `Type/id/_history/n` or an absolute URL ending so.
pub fn reference_text(text: &str) -> Option<(String, String)> {
    if text.starts_with("urn:") || text.starts_with('#') {
        return None;
    }
    let text = text.split("/_history/").next().unwrap_or(text);
    let mut parts = text.rsplit('/');
    let id = parts.next()?;
    let ty = parts.next()?;
    let type_like = ty.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && ty.chars().all(|c| c.is_ascii_alphanumeric());
    (type_like && !id.is_empty()).then(|| (ty.to_owned(), id.to_owned()))
}

/// A text as searched and indexed: trimmed, lower case, inner spaces collapsed.
pub fn normalise(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn split_words(s: &str) -> Vec<String> {
    s.split(|c: char| c.is_whitespace() || matches!(c, ',' | '.' | '-' | '·' | '•' | '・' | '，'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The indexed words of a string, HumanName or Address.
pub fn words_of(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => {
            let mut w = split_words(s);
            let whole = normalise(s);
            if !whole.is_empty() {
                w.push(whole);
            }
            w
        }
        Value::Object(o) => {
            let mut out = Vec::new();
            let family = o.get("family").and_then(Value::as_str).unwrap_or("");
            let given: Vec<&str> = o
                .get("given")
                .and_then(Value::as_array)
                .map(|g| g.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for s in std::iter::once(family).chain(given.iter().copied()) {
                out.extend(words_of(&Value::String(s.to_owned())));
            }
            if !family.is_empty() && !given.is_empty() {
                out.push(normalise(&format!("{family}{}", given.concat())));
            }
            for k in ["text", "city", "district", "state", "postalCode"] {
                if let Some(s) = o.get(k).and_then(Value::as_str) {
                    out.extend(words_of(&Value::String(s.to_owned())));
                }
            }
            if let Some(lines) = o.get("line").and_then(Value::as_array) {
                for l in lines.iter().filter_map(Value::as_str) {
                    out.extend(words_of(&Value::String(l.to_owned())));
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// The range of a date, dateTime, instant or Period value.
pub fn date_value(v: &Value) -> Option<(i64, i64)> {
    match v {
        Value::String(s) => date_range(s),
        Value::Object(o) => {
            let start = o.get("start").and_then(Value::as_str).and_then(date_range);
            let end = o.get("end").and_then(Value::as_str).and_then(date_range);
            if start.is_none() && end.is_none() {
                return None;
            }
            Some((
                start.map_or(i64::MIN / 2, |r| r.0),
                end.map_or(i64::MAX / 2, |r| r.1),
            ))
        }
        _ => None,
    }
}

/// `[lo, hi)` in ms of a FHIR date, dateTime or instant at its precision; `None` when it is
/// not one.
pub fn date_range(text: &str) -> Option<(i64, i64)> {
    let t = text.trim();
    let (date, time) = match t.split_once('T') {
        Some((d, tm)) => (d, Some(tm)),
        None => (t, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let num = |s: &str, len: usize| -> Option<u32> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let year = i32::try_from(num(parts.first()?, 4)?).ok()?;
    let ms = |d: NaiveDate| -> Option<i64> {
        Some(
            Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?)
                .timestamp_millis(),
        )
    };
    match (parts.len(), time) {
        (1, None) => {
            let lo = NaiveDate::from_ymd_opt(year, 1, 1)?;
            let hi = NaiveDate::from_ymd_opt(year + 1, 1, 1)?;
            Some((ms(lo)?, ms(hi)?))
        }
        (2, None) => {
            let month = num(parts[1], 2)?;
            let lo = NaiveDate::from_ymd_opt(year, month, 1)?;
            let hi = if month == 12 {
                NaiveDate::from_ymd_opt(year + 1, 1, 1)?
            } else {
                NaiveDate::from_ymd_opt(year, month + 1, 1)?
            };
            Some((ms(lo)?, ms(hi)?))
        }
        (3, None) => {
            let d = NaiveDate::from_ymd_opt(year, num(parts[1], 2)?, num(parts[2], 2)?)?;
            let lo = ms(d)?;
            Some((lo, lo + 86_400_000))
        }
        (3, Some(tm)) => {
            let d = NaiveDate::from_ymd_opt(year, num(parts[1], 2)?, num(parts[2], 2)?)?;
            // The zone: Z, ±hh:mm, or none (UTC).
            let (clock, offset_min) = if let Some(c) = tm.strip_suffix('Z') {
                (c, 0i64)
            } else if let Some(i) = tm.rfind(['+', '-']).filter(|i| *i >= 5) {
                let (c, z) = tm.split_at(i);
                let sign = if z.starts_with('-') { -1 } else { 1 };
                let (h, m) = z[1..].split_once(':')?;
                (
                    c,
                    sign * (i64::from(num(h, 2)?) * 60 + i64::from(num(m, 2)?)),
                )
            } else {
                (tm, 0)
            };
            let (hms, frac) = match clock.split_once('.') {
                Some((a, f)) => (a, Some(f)),
                None => (clock, None),
            };
            let hp: Vec<&str> = hms.split(':').collect();
            let h = num(hp.first()?, 2)?;
            let mi = num(hp.get(1)?, 2)?;
            let s = match hp.get(2) {
                Some(s) => Some(num(s, 2)?),
                None => None,
            };
            let naive = d.and_hms_opt(h, mi, s.unwrap_or(0))?;
            let mut lo = Utc.from_utc_datetime(&naive).timestamp_millis() - offset_min * 60_000;
            let width = match (s, frac) {
                (None, _) => 60_000,
                (Some(_), None) => 1_000,
                (Some(_), Some(f)) => {
                    if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    let millis: String = f.chars().chain("000".chars()).take(3).collect();
                    lo += i64::from(millis.parse::<u32>().ok()?);
                    1
                }
            };
            Some((lo, lo + width))
        }
        _ => None,
    }
}

/// An instant (ms since the epoch) as FHIR writes it, and as fhir-sdk's model writes it back:
/// `2024-03-05T08:30:00Z`, with milliseconds only when there are some, trailing zeros
/// dropped (`…00.25Z`).
pub fn instant(ms: i64) -> String {
    let t = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    match ms.rem_euclid(1000) {
        0 => format!("{base}Z"),
        frac => format!("{base}.{}Z", format!("{frac:03}").trim_end_matches('0')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check_range(text: &str, lo: &str, hi: &str) {
        let (a, b) = date_range(text).unwrap_or_else(|| panic!("{text} does not parse"));
        assert_eq!(
            (instant(a), instant(b)),
            (lo.to_owned(), hi.to_owned()),
            "{text}"
        );
    }

    #[test]
    fn dates_are_ranges_at_their_precision() {
        check_range("2024", "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z");
        check_range("2024-12", "2024-12-01T00:00:00Z", "2025-01-01T00:00:00Z");
        check_range("2024-02-29", "2024-02-29T00:00:00Z", "2024-03-01T00:00:00Z");
        check_range(
            "2024-03-05T08:30:00Z",
            "2024-03-05T08:30:00Z",
            "2024-03-05T08:30:01Z",
        );
        check_range(
            "2024-03-05T16:30:00+08:00",
            "2024-03-05T08:30:00Z",
            "2024-03-05T08:30:01Z",
        );
        check_range(
            "2024-03-05T08:30",
            "2024-03-05T08:30:00Z",
            "2024-03-05T08:31:00Z",
        );
        check_range(
            "2024-03-05T08:30:00.25Z",
            "2024-03-05T08:30:00.25Z",
            "2024-03-05T08:30:00.251Z",
        );
        for bad in [
            "",
            "24",
            "2024-13",
            "2024-02-30",
            "2024-03-05T25:00:00Z",
            "2024/03/05",
            "x",
        ] {
            assert_eq!(date_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn tokens_cover_every_search_form() {
        assert_eq!(
            tokens(
                &json!({"coding": [{"system": "http://loinc.org", "code": "718-7"}, {"code": "HB"}]})
            ),
            [
                "http://loinc.org|718-7",
                "718-7",
                "http://loinc.org|",
                "|HB",
                "HB"
            ]
        );
        assert_eq!(
            tokens(&json!({"system": "urn:mrn", "value": "M1"})),
            ["urn:mrn|M1", "M1", "urn:mrn|"]
        );
        assert_eq!(tokens(&json!("final")), ["final"]);
        assert_eq!(tokens(&json!(true)), ["true"]);
    }

    #[test]
    fn references_keep_type_and_id() {
        assert_eq!(
            reference(&json!({"reference": "Patient/p1"})),
            Some(("Patient".into(), "p1".into()))
        );
        assert_eq!(
            reference(&json!({"reference": "http://x/fhir/r4/Observation/o1/_history/2"})),
            Some(("Observation".into(), "o1".into()))
        );
        assert_eq!(reference(&json!({"reference": "urn:uuid:1234"})), None);
        assert_eq!(reference(&json!({"display": "no reference"})), None);
    }

    #[test]
    fn names_are_words_and_cjk_names_whole() {
        let w = words_of(&json!({"family": "张", "given": ["伟"], "text": "张伟"}));
        for want in ["张", "伟", "张伟"] {
            assert!(w.contains(&want.to_owned()), "{want} in {w:?}");
        }
        let w = words_of(&json!({"family": "Zhang", "given": ["Wei Ming"]}));
        for want in ["zhang", "wei", "ming", "wei ming"] {
            assert!(w.contains(&want.to_owned()), "{want} in {w:?}");
        }
    }

    #[test]
    fn an_observation_indexes_its_listed_parameters() {
        let def = super::super::table::def("Observation").unwrap();
        let ix = index(
            def,
            &json!({
                "resourceType": "Observation", "id": "o1", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
                "subject": {"reference": "Patient/p1"},
                "effectiveDateTime": "2024-03-05"
            }),
        );
        assert_eq!(ix.patient.as_deref(), Some("p1"));
        assert!(ix.terms.contains(&("code".into(), "718-7".into())));
        assert!(ix.terms.contains(&("patient".into(), "Patient/p1".into())));
        assert!(ix.terms.contains(&("subject".into(), "p1".into())));
        assert!(ix.terms.contains(&("status".into(), "final".into())));
        assert!(ix.terms.contains(&("_id".into(), "o1".into())));
        assert_eq!(ix.dates.len(), 1);
    }
}
