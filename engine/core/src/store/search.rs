//! Searching messages by what they say (the console's message browser): the text of the body
//! and headers, an HL7 message control id (MSH-10) and a patient (PID-3 identifier or PID-5
//! name; in a JSON body, a `Patient/<id>` reference or an identifier value). Bodies, headers
//! and errors are sealed at rest, so no index can answer this: the candidates the other filters
//! leave are opened and read, newest first, a bounded number per request.

use crate::message::Message;

/// Messages read per query.
pub(super) const SCAN_BATCH: i64 = 200;
/// Messages read at most per call of [`super::Store::list`] with a content filter.
pub const SCAN_LIMIT: u64 = 5_000;

/// What a message must say to match (every given part must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentFilter {
    /// A substring of the body text or of a header value (case-insensitive).
    pub text: Option<String>,
    /// The HL7 message control id (MSH-10, header `hl7-control-id`), exactly.
    pub control_id: Option<String>,
    /// A patient: an HL7 PID-3 identifier (its first component, exactly) or a part of PID-5
    /// (the name, case-insensitive); in a JSON body a `Patient/<id>` reference or an
    /// identifier `value`.
    pub patient: Option<String>,
}

fn given(o: &Option<String>) -> Option<&str> {
    o.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl ContentFilter {
    pub fn is_empty(&self) -> bool {
        given(&self.text).is_none()
            && given(&self.control_id).is_none()
            && given(&self.patient).is_none()
    }

    /// Whether the opened message `m` matches.
    pub fn matches(&self, m: &Message) -> bool {
        let body = String::from_utf8_lossy(&m.body);
        if let Some(t) = given(&self.text) {
            let t = t.to_lowercase();
            let in_headers = m.headers.values().any(|v| v.to_lowercase().contains(&t));
            if !in_headers && !body.to_lowercase().contains(&t) {
                return false;
            }
        }
        if let Some(c) = given(&self.control_id) {
            let header = m.headers.get("hl7-control-id").map(String::as_str);
            if header != Some(c) && hl7_field(&body, "MSH", 10).as_deref() != Some(c) {
                return false;
            }
        }
        if let Some(p) = given(&self.patient)
            && !patient_matches(&body, p)
        {
            return false;
        }
        true
    }
}

/// Field `n` of the first segment `seg` of an HL7 v2 message (MSH counts MSH-1 as the field
/// separator itself, so MSH-10 is the 9th after the segment name).
fn hl7_field(body: &str, seg: &str, n: usize) -> Option<String> {
    let sep = hl7_separator(body)?;
    let line = body
        .split(['\r', '\n'])
        .find(|l| l.starts_with(seg) && l[seg.len()..].starts_with(sep))?;
    let index = if seg == "MSH" { n - 1 } else { n };
    line.split(sep).nth(index).map(str::to_owned)
}

fn hl7_separator(body: &str) -> Option<char> {
    let start = body.find("MSH")?;
    body[start + 3..].chars().next()
}

fn patient_matches(body: &str, p: &str) -> bool {
    if let Some(sep) = hl7_separator(body) {
        let comp = body
            .find("MSH")
            .and_then(|i| body[i + 4..].chars().next())
            .unwrap_or('^');
        let rep = body
            .find("MSH")
            .and_then(|i| body[i + 5..].chars().next())
            .unwrap_or('~');
        let lower = p.to_lowercase();
        for line in body
            .split(['\r', '\n'])
            .filter(|l| l.starts_with("PID") && l[3..].starts_with(sep))
        {
            let fields: Vec<&str> = line.split(sep).collect();
            let ids = fields.get(3).copied().unwrap_or("");
            if ids
                .split(rep)
                .any(|r| r.split(comp).next().unwrap_or("") == p)
            {
                return true;
            }
            let name = fields.get(5).copied().unwrap_or("");
            if name
                .split(rep)
                .any(|r| r.to_lowercase().replace(comp, " ").contains(&lower))
            {
                return true;
            }
        }
        return false;
    }
    // JSON (FHIR and others): a reference to the patient or an identifier's value.
    body.contains(&format!("Patient/{p}\""))
        || body.contains(&format!("\"value\":\"{p}\""))
        || body.contains(&format!("\"value\": \"{p}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &str, control: Option<&str>) -> Message {
        let mut m = Message {
            id: "m1".into(),
            facility: "f".into(),
            pipeline: "p".into(),
            kind: "hl7v2".into(),
            body: body.as_bytes().to_vec(),
            headers: Default::default(),
            source: String::new(),
            received_at: 0,
            trace_id: String::new(),
            dedup_key: None,
            parent_id: None,
            state: crate::message::State::Done,
            attempts: 0,
            next_attempt_at: None,
            last_error: None,
            updated_at: 0,
        };
        if let Some(c) = control {
            m.headers.insert("hl7-control-id".into(), c.into());
        }
        m
    }

    const ADT: &str = "MSH|^~\\&|HIS|ANJI|HZ|PROV|20261207101500||ADT^A01|CTRL-0042|P|2.5\rPID|1||330523199001011234^^^ANJI^PI~MRN-77^^^ANJI^MR||ZHANG^San||19900101|M\rPV1|1|I\r";

    #[test]
    fn control_id_patient_and_text() {
        let m = msg(ADT, None);
        let f = |text: Option<&str>, control: Option<&str>, patient: Option<&str>| ContentFilter {
            text: text.map(Into::into),
            control_id: control.map(Into::into),
            patient: patient.map(Into::into),
        };
        assert!(
            f(None, Some("CTRL-0042"), None).matches(&m),
            "MSH-10 from the body"
        );
        assert!(!f(None, Some("CTRL-004"), None).matches(&m), "exactly");
        assert!(
            f(None, Some("X9"), None).matches(&msg(ADT, Some("X9"))),
            "the header"
        );
        assert!(
            f(None, None, Some("MRN-77")).matches(&m),
            "second PID-3 repetition"
        );
        assert!(f(None, None, Some("zhang")).matches(&m), "PID-5, any case");
        assert!(
            !f(None, None, Some("MRN-7")).matches(&m),
            "identifiers exactly"
        );
        assert!(
            !f(None, None, Some("ANJI")).matches(&m),
            "not the assigning authority"
        );
        assert!(f(Some("a01"), None, None).matches(&m));
        assert!(!f(Some("ORU"), None, None).matches(&m));
        assert!(
            !f(Some("a01"), Some("CTRL-0042"), Some("LI")).matches(&m),
            "all must match"
        );
        assert!(f(None, None, None).is_empty());
    }

    #[test]
    fn json_patients() {
        let m = msg(
            r#"{"resourceType":"Observation","subject":{"reference":"Patient/p-9"}}"#,
            None,
        );
        let f = ContentFilter {
            patient: Some("p-9".into()),
            ..ContentFilter::default()
        };
        assert!(f.matches(&m));
        let f = ContentFilter {
            patient: Some("p-".into()),
            ..ContentFilter::default()
        };
        assert!(!f.matches(&m));
    }
}
