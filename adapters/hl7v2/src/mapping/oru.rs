//! `ORU^R01` → [`Observations`]: every `OBR` with its `OBX` results, typed by `OBX-2`, and
//! the `NTE` notes placed under the segment they follow.

use serde::{Deserialize, Serialize};

use super::adt::summary_of;
use super::read::{
    coded_of, entity_of, list, note_of, one, standard_encoding, text_of, timestamp_of,
    warn_bad_time,
};
use super::{Coded, EntityId, Header, MappingError, PatientSummary, Timestamp};
use crate::parse::{Message, Segment, Value};

/// The value of an `OBX`, one per repetition of `OBX-5`, typed by `OBX-2`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ObservationValue {
    /// `NM`: the decimal as sent, and as a number when it is one (`[+-]digits[.digits]`).
    Numeric {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        number: Option<f64>,
    },
    /// `ST`, `TX`, `FT`: text, escapes decoded (`\.br\` is a line break).
    Text { text: String },
    /// `CE`, `CWE`, `CNE`, `CF`.
    Coded(Coded),
    /// Any other type (`SN`, `DT`, `TS`, `ED`, `RP`, …) or none: the value as HL7 text with
    /// the standard delimiters whatever the message used (`^` between components, `&` between
    /// subcomponents, delimiters inside data escaped), so `<^500` for an SN; plain text when
    /// the value has no parts.
    Raw { text: String },
}

/// One result (`OBX`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// OBX-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_id: Option<String>,
    /// OBX-2, upper case (`NM`, `ST`, `CE`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<String>,
    /// OBX-3, the observation identifier (what was measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Coded>,
    /// OBX-4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_id: Option<String>,
    /// OBX-5, every non-empty repetition.
    #[serde(default)]
    pub values: Vec<ObservationValue>,
    /// OBX-6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<Coded>,
    /// OBX-7, e.g. `3.9-6.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_range: Option<String>,
    /// OBX-8, every repetition (table 0078: `H`, `L`, `A`, `N`, …).
    #[serde(default)]
    pub abnormal_flags: Vec<String>,
    /// OBX-11 (table 0085: `F` final, `P` preliminary, `C` corrected, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_status: Option<String>,
    /// OBX-14.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observation_time: Option<Timestamp>,
    /// `NTE-3` of the `NTE` segments that follow this `OBX`.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// One order (`OBR`) with its results.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// OBR-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_id: Option<String>,
    /// OBR-2, else ORC-2 of the `ORC` just before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placer_number: Option<EntityId>,
    /// OBR-3, else ORC-3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filler_number: Option<EntityId>,
    /// OBR-4, the universal service identifier (what was ordered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Coded>,
    /// OBR-7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observation_time: Option<Timestamp>,
    /// OBR-25 (table 0123: `F` final, `P` preliminary, `C` corrected, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_status: Option<String>,
    /// `NTE-3` of the `NTE` segments after the `OBR` (or after its `ORC`), before any `OBX`.
    #[serde(default)]
    pub notes: Vec<String>,
    /// The `OBX` segments after this `OBR`, in order.
    #[serde(default)]
    pub observations: Vec<Observation>,
}

/// The results of an `ORU^R01`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observations {
    /// `MSH-9.1^MSH-9.2`, `ORU^R01`.
    pub message_type: String,
    /// `R01`.
    pub event: String,
    /// `MSH-7`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<Timestamp>,
    /// `MSH-10`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_id: Option<String>,
    /// `MSH-3` (HD.1, else HD.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_application: Option<String>,
    /// `MSH-4` (HD.1, else HD.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_facility: Option<String>,
    /// The `PID`, if the message has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<PatientSummary>,
    /// Every `OBR` in order (never empty). `OBX` segments before any `OBR` are kept under an
    /// order with no `OBR` fields, with a warning.
    pub orders: Vec<Order>,
    /// `NTE-3` of `NTE` segments outside any order (e.g. after `PID`).
    #[serde(default)]
    pub notes: Vec<String>,
    /// What could not be read as expected, by path; values are kept as sent.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// An HL7 NM: `[+-]digits[.digits]` (or `.digits`); `None` for anything else.
fn parse_decimal(s: &str) -> Option<f64> {
    let t = s.trim();
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    let mut dots = 0;
    let mut digits = 0;
    for c in body.chars() {
        match c {
            '.' => dots += 1,
            '0'..='9' => digits += 1,
            _ => return None,
        }
    }
    if dots > 1 || digits == 0 {
        return None;
    }
    t.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Where an `NTE` goes: the segment it follows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Anchor {
    Top,
    Orc,
    Obr,
    Obx,
}

pub(super) fn observation_of(
    obx: Segment<'_>,
    n: usize,
    warnings: &mut Vec<String>,
) -> Observation {
    let value_type = one(obx, 2, text_of).map(|t| t.to_ascii_uppercase());
    let mut values = Vec::new();
    if let Some(field) = obx.field(5) {
        for rep in field.repetitions() {
            let Value::Data(rep) = rep.value() else {
                continue;
            };
            let whole = rep.text();
            if whole.trim().is_empty() {
                continue;
            }
            let v = match value_type.as_deref() {
                Some("NM") => {
                    let text = whole.trim().to_owned();
                    let number = parse_decimal(&text);
                    if number.is_none() {
                        warnings.push(format!(
                            "OBX[{n}]-5: an NM value that is not a decimal number; kept as text"
                        ));
                    }
                    ObservationValue::Numeric { text, number }
                }
                Some("ST" | "TX" | "FT") => ObservationValue::Text {
                    text: whole.into_owned(),
                },
                Some("CE" | "CWE" | "CNE" | "CF") => match coded_of(rep) {
                    Some(c) => ObservationValue::Coded(c),
                    None => continue,
                },
                _ => ObservationValue::Raw {
                    text: standard_encoding(rep),
                },
            };
            values.push(v);
        }
    }
    let observation_time = one(obx, 14, timestamp_of);
    warn_bad_time(observation_time.as_ref(), &format!("OBX[{n}]-14"), warnings);
    Observation {
        set_id: one(obx, 1, text_of),
        value_type,
        code: one(obx, 3, coded_of),
        sub_id: one(obx, 4, text_of),
        values,
        units: one(obx, 6, coded_of),
        reference_range: one(obx, 7, text_of),
        abnormal_flags: list(obx, 8, text_of),
        result_status: one(obx, 11, text_of),
        observation_time,
        notes: Vec::new(),
    }
}

fn order_of(
    obr: Segment<'_>,
    orc: Option<Segment<'_>>,
    n: usize,
    warnings: &mut Vec<String>,
) -> Order {
    let observation_time = one(obr, 7, timestamp_of);
    warn_bad_time(observation_time.as_ref(), &format!("OBR[{n}]-7"), warnings);
    Order {
        set_id: one(obr, 1, text_of),
        placer_number: one(obr, 2, entity_of).or_else(|| orc.and_then(|o| one(o, 2, entity_of))),
        filler_number: one(obr, 3, entity_of).or_else(|| orc.and_then(|o| one(o, 3, entity_of))),
        service: one(obr, 4, coded_of),
        observation_time,
        result_status: one(obr, 25, text_of),
        notes: Vec::new(),
        observations: Vec::new(),
    }
}

pub(super) fn map_oru(message: &Message, h: Header) -> Result<Observations, MappingError> {
    let mut warnings = Vec::new();
    let mut patient = None;
    let mut orders: Vec<Order> = Vec::new();
    let mut notes = Vec::new();
    let mut pending = Vec::new();
    let mut anchor = Anchor::Top;
    let mut orc = None;
    let (mut pids, mut obrs, mut obxs) = (0usize, 0usize, 0usize);
    for seg in message.segments() {
        match seg.name() {
            "PID" => {
                pids += 1;
                if pids > 1 {
                    return Err(MappingError::unusable(
                        format!("PID[{pids}]"),
                        "an ORU^R01 with results for several patients; the built-in mapping reads one patient per message (split it)",
                    ));
                }
                let summary = summary_of(seg, &mut warnings);
                if summary.identifiers.is_empty() {
                    warnings.push(
                        "PID-3: no patient identifier; the results can only be placed by their order numbers"
                            .into(),
                    );
                }
                patient = Some(summary);
                anchor = Anchor::Top;
            }
            "PD1" | "PV1" | "PV2" | "NK1" => anchor = Anchor::Top,
            "ORC" => {
                notes.append(&mut pending);
                orc = Some(seg);
                anchor = Anchor::Orc;
            }
            "OBR" => {
                obrs += 1;
                let mut order = order_of(seg, orc.take(), obrs, &mut warnings);
                order.notes.append(&mut pending);
                orders.push(order);
                anchor = Anchor::Obr;
            }
            "OBX" => {
                obxs += 1;
                let obs = observation_of(seg, obxs, &mut warnings);
                if orders.is_empty() {
                    warnings.push(format!(
                        "OBX[{obxs}]: a result before any OBR; kept under an order without OBR fields"
                    ));
                    orders.push(Order::default());
                }
                if let Some(order) = orders.last_mut() {
                    order.observations.push(obs);
                }
                anchor = Anchor::Obx;
            }
            "NTE" => {
                let Some(note) = note_of(seg) else {
                    continue;
                };
                let order = orders.last_mut();
                match (anchor, order) {
                    (Anchor::Obx, Some(o)) => match o.observations.last_mut() {
                        Some(obs) => obs.notes.push(note),
                        None => o.notes.push(note),
                    },
                    (Anchor::Obr, Some(o)) => o.notes.push(note),
                    (Anchor::Orc, _) => pending.push(note),
                    _ => notes.push(note),
                }
            }
            // Z-segments, SPM, TQ1, CTI, EVN in odd places …: ignored (HL7-34).
            _ => {}
        }
    }
    notes.append(&mut pending);
    if orders.is_empty() {
        return Err(MappingError::unusable(
            "OBR",
            "no OBR and no OBX: an ORU^R01 without results",
        ));
    }
    if patient.is_none() {
        warnings.push("PID: no patient segment".into());
    }
    warn_bad_time(h.event_time.as_ref(), "MSH-7", &mut warnings);
    Ok(Observations {
        message_type: format!("{}^{}", h.message_type, h.trigger),
        event: h.trigger,
        event_time: h.event_time,
        control_id: h.control_id,
        sending_application: h.sending_application,
        sending_facility: h.sending_facility,
        patient,
        orders,
        notes,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal("5.6"), Some(5.6));
        assert_eq!(parse_decimal(" -0.25 "), Some(-0.25));
        assert_eq!(parse_decimal("+12"), Some(12.0));
        assert_eq!(parse_decimal(".5"), Some(0.5));
        for bad in [
            "", ".", "-", "1.2.3", "1e5", "NaN", "inf", ">5", "5 mmol", "１２",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad}");
        }
    }
}
