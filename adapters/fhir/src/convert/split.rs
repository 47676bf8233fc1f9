//! Cuts a message into its repeating groups, each made a message of its own (the header
//! segments, then the group's segments) and parsed again by the hl7v2 crate's tokenizer, so
//! the built-in mappings, which read one patient or one order per message, read each group:
//!
//! * `ORU^R01`: one `PATIENT_RESULT` group per `PID` (several patients in one message, which
//!   `hl7_map` refuses, become one set of results per patient);
//! * `ADT^A40` (structure `ADT_A39`): one merge per `PID` (with its `MRG`);
//! * `ORM^O01`, `OML^O21`: one order per `ORC`, each with the patient segments before the
//!   first `ORC`.
//!
//! The segments are the message's own (raw, escapes and all), so the groups decode exactly as
//! the whole message would.

use huizhen_hl7::Message;

use super::ConvertError;

/// Segments that open a message and belong to every group.
const HEADER: &[&str] = &["MSH", "SFT", "UAC", "EVN"];

/// A group: its 1-based number and the message it makes.
pub(super) struct Group {
    pub number: usize,
    pub message: Message,
}

/// Groups that start at each `start` segment (`PID` for ORU and A40). Segments after the
/// header and before the first `start` form a group of their own (results without a patient,
/// which the mapping reads with a warning). A message without any `start` is one group.
pub(super) fn by_segment(message: &Message, start: &str) -> Result<Vec<Group>, ConvertError> {
    let segs: Vec<_> = message.segments().collect();
    let header_end = segs
        .iter()
        .position(|s| !HEADER.contains(&s.name()))
        .unwrap_or(segs.len());
    if segs.iter().filter(|s| s.name() == start).count() <= 1 {
        return Ok(vec![Group {
            number: 1,
            message: reparse(message, segs.iter().map(|s| s.raw()))?,
        }]);
    }
    let mut groups: Vec<Vec<&str>> = Vec::new();
    for s in &segs[header_end..] {
        if s.name() == start || groups.is_empty() {
            groups.push(Vec::new());
        }
        if let Some(g) = groups.last_mut() {
            g.push(s.raw());
        }
    }
    groups
        .into_iter()
        .enumerate()
        .map(|(i, g)| {
            let raws = segs[..header_end].iter().map(|s| s.raw()).chain(g);
            Ok(Group {
                number: i + 1,
                message: reparse(message, raws)?,
            })
        })
        .collect()
}

/// Orders: the segments before the first `ORC` (header and patient) with each `ORC` group.
/// A message with at most one `ORC` is one group.
pub(super) fn by_order(message: &Message) -> Result<Vec<Group>, ConvertError> {
    let segs: Vec<_> = message.segments().collect();
    let Some(first) = segs.iter().position(|s| s.name() == "ORC") else {
        return by_segment(message, "ORC");
    };
    if segs.iter().filter(|s| s.name() == "ORC").count() <= 1 {
        return by_segment(message, "ORC");
    }
    let mut groups: Vec<Vec<&str>> = Vec::new();
    for s in &segs[first..] {
        if s.name() == "ORC" {
            groups.push(Vec::new());
        }
        if let Some(g) = groups.last_mut() {
            g.push(s.raw());
        }
    }
    groups
        .into_iter()
        .enumerate()
        .map(|(i, g)| {
            let raws = segs[..first].iter().map(|s| s.raw()).chain(g);
            Ok(Group {
                number: i + 1,
                message: reparse(message, raws)?,
            })
        })
        .collect()
}

/// The segments as a message of their own, with the whole message's charset (for `\X..\`
/// escapes).
fn reparse<'a>(
    whole: &Message,
    raws: impl Iterator<Item = &'a str>,
) -> Result<Message, ConvertError> {
    let text: Vec<&str> = raws.collect();
    let mut m = Message::parse(&text.join("\r")).map_err(|e| ConvertError::Message {
        path: String::new(),
        reason: format!("a group of the message does not parse again: {e}"),
    })?;
    m.set_charset(whole.charset());
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(m: &Message) -> String {
        m.segments().map(|s| s.name()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn results_split_per_patient() {
        let m = Message::parse(
            "MSH|^~\\&|LIS||||202601010000||ORU^R01|1|P|2.5\rPID|1||A\rOBR|1\rOBX|1\rPID|2||B\rPV1|1\rOBR|1\rOBX|1\rOBX|2",
        )
        .unwrap();
        let g = by_segment(&m, "PID").unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(names(&g[0].message), "MSH PID OBR OBX");
        assert_eq!(names(&g[1].message), "MSH PID PV1 OBR OBX OBX");
        assert_eq!(g[1].message.get_str("PID-3").unwrap().as_deref(), Some("B"));
    }

    #[test]
    fn orders_split_per_orc() {
        let m = Message::parse(
            "MSH|^~\\&|HIS||||202601010000||OML^O21|1|P|2.5\rPID|1||A\rPV1|1\rORC|NW|1\rOBR|1|1||X\rORC|NW|2\rOBR|1|2||Y",
        )
        .unwrap();
        let g = by_order(&m).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(names(&g[1].message), "MSH PID PV1 ORC OBR");
        assert_eq!(g[1].message.get_str("OBR-4").unwrap().as_deref(), Some("Y"));
    }

    #[test]
    fn one_group_is_the_message() {
        let m = Message::parse("MSH|^~\\&|A||||1||ORU^R01|1|P|2.5\rPID|1||A\rOBR|1").unwrap();
        assert_eq!(by_segment(&m, "PID").unwrap().len(), 1);
    }
}
