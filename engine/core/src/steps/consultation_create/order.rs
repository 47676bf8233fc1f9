//! The order record `consultation_create` reads: the parts of `hl7_map`'s JSON `"record":
//! "order"` it needs, by name (the core knows no HL7), and what it derives from them: the
//! local patient id, the HIS order kept for the result, the requested time.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use huizhen_domain::consultation::Urgency;
use huizhen_domain::consultation::outbound::{
    Clinician, HisOrder, OrderNumber, PatientIdentifier, ServiceCode,
};
use serde::Deserialize;

/// The parts of `hl7_map`'s order record the step reads.
#[derive(Debug, Deserialize)]
pub(super) struct Order {
    pub(super) record: Option<String>,
    pub(super) control: Control,
    #[serde(default)]
    pub(super) control_reason: Option<Coded>,
    #[serde(default)]
    pub(super) placer_order_number: Option<EntityId>,
    #[serde(default)]
    pub(super) filler_order_number: Option<EntityId>,
    pub(super) patient: Patient,
    #[serde(default)]
    pub(super) ordering_provider: Option<Doctor>,
    pub(super) urgency: Urgency,
    #[serde(default)]
    pub(super) requested_time: Option<Timestamp>,
    #[serde(default)]
    pub(super) requested_service: Option<Coded>,
    #[serde(default)]
    pub(super) requested_department: Option<Department>,
    #[serde(default)]
    pub(super) reason_for_study: Vec<Coded>,
    #[serde(default)]
    pub(super) diagnoses: Vec<Diagnosis>,
    #[serde(default)]
    pub(super) clinical_info: Option<String>,
    #[serde(default)]
    pub(super) case_summary: Option<String>,
    #[serde(default)]
    pub(super) attachments: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Control {
    pub(super) code: String,
    pub(super) action: String,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Coded {
    #[serde(default)]
    pub(super) code: Option<String>,
    #[serde(default)]
    pub(super) text: Option<String>,
    #[serde(default)]
    pub(super) system: Option<String>,
}

impl Coded {
    pub(super) fn text_or_code(&self) -> Option<&str> {
        self.text
            .as_deref()
            .or(self.code.as_deref())
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct EntityId {
    pub(super) id: String,
    #[serde(default)]
    pub(super) namespace: Option<String>,
}

impl EntityId {
    pub(super) fn number(&self) -> Option<OrderNumber> {
        let id = self.id.trim();
        (!id.is_empty()).then(|| OrderNumber {
            id: id.to_owned(),
            namespace: nonblank(self.namespace.as_deref()),
        })
    }
}

/// A trimmed value, none when blank.
pub(super) fn nonblank(v: Option<&str>) -> Option<String> {
    v.map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

#[derive(Debug, Deserialize)]
pub(super) struct Patient {
    #[serde(default)]
    pub(super) identifiers: Vec<Identifier>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Identifier {
    pub(super) id: String,
    #[serde(default)]
    pub(super) assigning_authority: Option<String>,
    #[serde(default)]
    pub(super) type_code: Option<String>,
}

impl Identifier {
    /// A resident id, an insurance number or another national number: not the HIS's own.
    pub(super) fn is_national(&self) -> bool {
        matches!(
            self.type_code
                .as_deref()
                .map(str::to_ascii_uppercase)
                .as_deref(),
            Some("NI" | "PSN_NO" | "PSN" | "SS" | "PPN" | "HC")
        )
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct Doctor {
    #[serde(default)]
    pub(super) id: Option<String>,
    #[serde(default)]
    pub(super) text: Option<String>,
    #[serde(default)]
    pub(super) family: Option<String>,
    #[serde(default)]
    pub(super) given: Option<String>,
}

impl Doctor {
    /// The doctor with a name, as `ORC-12` gave it.
    pub(super) fn clinician(&self) -> Option<Clinician> {
        let id = nonblank(self.id.as_deref())?;
        let name = nonblank(self.text.as_deref()).or_else(|| {
            let joined: String = [self.family.as_deref(), self.given.as_deref()]
                .into_iter()
                .flatten()
                .map(str::trim)
                .collect();
            nonblank(Some(&joined))
        })?;
        Some(Clinician { id, name })
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct Timestamp {
    #[serde(default)]
    pub(super) iso: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Department {
    #[serde(default)]
    pub(super) code: Option<String>,
    #[serde(default)]
    pub(super) name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Diagnosis {
    #[serde(default)]
    pub(super) icd10: Option<String>,
}

/// The order's local patient id: the first identifier that is not a resident id, an insurance
/// number or another national number (the rule of identity matching).
pub(super) fn local_patient_id(order: &Order) -> Option<&str> {
    order
        .patient
        .identifiers
        .iter()
        .find(|i| !i.is_national() && !i.id.trim().is_empty())
        .map(|i| i.id.trim())
}

/// The order as the HIS identified it, for the result going back (none without `ORC-2`): its
/// order numbers, its own patient ids (not national numbers), the ordering doctor with the
/// name sent, the service ordered; and, apart, the national numbers of `PID-3`, which billing
/// identifies the person by to the insurance platform (never sent back).
pub(super) fn his_order(order: &Order) -> Option<HisOrder> {
    let placer = order.placer_order_number.as_ref()?.number()?;
    Some(HisOrder {
        placer,
        filler: order
            .filler_order_number
            .as_ref()
            .and_then(EntityId::number),
        patient_identifiers: identifiers(order, false),
        national_identifiers: identifiers(order, true),
        ordering_provider: order.ordering_provider.as_ref().and_then(Doctor::clinician),
        service: order.requested_service.as_ref().and_then(|s| {
            Some(ServiceCode {
                code: nonblank(s.code.as_deref())?,
                text: nonblank(s.text.as_deref()),
                system: nonblank(s.system.as_deref()),
            })
        }),
    })
}

/// The order's patient identifiers that are (or are not) national numbers, as sent.
fn identifiers(order: &Order, national: bool) -> Vec<PatientIdentifier> {
    order
        .patient
        .identifiers
        .iter()
        .filter(|i| i.is_national() == national && !i.id.trim().is_empty())
        .map(|i| PatientIdentifier {
            id: i.id.trim().to_owned(),
            assigning_authority: nonblank(i.assigning_authority.as_deref()),
            type_code: nonblank(i.type_code.as_deref()),
        })
        .collect()
}

/// A date-time as `hl7_map` writes it (`2026-01-15T08:30`, with or without seconds and
/// offset; a date alone), in the local time zone when no offset is given.
pub(super) fn parse_time(iso: &str, offset_minutes: i32) -> Option<(DateTime<Utc>, bool)> {
    if let Ok(t) = DateTime::parse_from_rfc3339(iso) {
        return Some((t.with_timezone(&Utc), false));
    }
    let offset = TimeDelta::minutes(i64::from(offset_minutes));
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(iso, f) {
            return Some((t.and_utc() - offset, false));
        }
    }
    NaiveDate::parse_from_str(iso, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| (t.and_utc() - offset, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn order_times_are_local_unless_they_say_otherwise() {
        let (t, day) = parse_time("2026-01-15T08:30", 480).unwrap();
        assert_eq!(t, Utc.with_ymd_and_hms(2026, 1, 15, 0, 30, 0).unwrap());
        assert!(!day);
        let (t, _) = parse_time("2026-01-15T08:30:00+00:00", 480).unwrap();
        assert_eq!(t, Utc.with_ymd_and_hms(2026, 1, 15, 8, 30, 0).unwrap());
        let (t, day) = parse_time("2026-01-15", 480).unwrap();
        assert_eq!(t, Utc.with_ymd_and_hms(2026, 1, 14, 16, 0, 0).unwrap());
        assert!(day);
        assert!(parse_time("2026-13-40", 480).is_none());
    }

    #[test]
    fn the_local_patient_id_skips_national_numbers() {
        let order: Order = serde_json::from_value(serde_json::json!({
            "record": "order",
            "control": {"code": "NW", "action": "new"},
            "urgency": "urgent",
            "patient": {"identifiers": [
                {"id": "110101199003077777", "type_code": "NI"},
                {"id": " ", "type_code": "MR"},
                {"id": "MRN-1", "type_code": "MR"}
            ]}
        }))
        .unwrap();
        assert_eq!(local_patient_id(&order), Some("MRN-1"));
    }

    #[test]
    fn the_order_is_kept_as_the_his_identified_it() {
        let order: Order = serde_json::from_value(serde_json::json!({
            "record": "order",
            "control": {"code": "NW", "action": "new"},
            "urgency": "urgent",
            "placer_order_number": {"id": " HZSQ-7 ", "namespace": "HIS"},
            "filler_order_number": {"id": "F-1"},
            "patient": {"identifiers": [
                {"id": "110101199003077777", "assigning_authority": "CHN", "type_code": "NI"},
                {"id": "MRN-1", "assigning_authority": "HXXRMYY", "type_code": "MR"}
            ]},
            "ordering_provider": {"id": "D0456", "family": "王", "given": "建国"},
            "requested_service": {"code": "HZ-XNK", "text": "远程心内科会诊", "system": "L"}
        }))
        .unwrap();
        let o = his_order(&order).unwrap();
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            serde_json::json!({
                "placer": {"id": "HZSQ-7", "namespace": "HIS"},
                "filler": {"id": "F-1", "namespace": null},
                "patient_identifiers": [
                    {"id": "MRN-1", "assigning_authority": "HXXRMYY", "type_code": "MR"}
                ],
                "national_identifiers": [
                    {"id": "110101199003077777", "assigning_authority": "CHN", "type_code": "NI"}
                ],
                "ordering_provider": {"id": "D0456", "name": "王建国"},
                "service": {"code": "HZ-XNK", "text": "远程心内科会诊", "system": "L"}
            })
        );
        // Without ORC-2 there is no order number to answer.
        let order: Order = serde_json::from_value(serde_json::json!({
            "record": "order",
            "control": {"code": "NW", "action": "new"},
            "urgency": "routine",
            "patient": {"identifiers": []}
        }))
        .unwrap();
        assert_eq!(his_order(&order), None);
    }
}
