//! Reading an `ORM^O01`/`OML^O21` into a [`ConsultationOrder`]: one walk over the segments,
//! then each value from the places listed in the module documentation of `order`.

use super::codes::{department_of, is_icd10_code, is_icd10_system, is_uid, names_study_uid};
use super::{
    Attachment, ConsultationOrder, Diagnosis, OrderAction, OrderControl, OrderFacility, Priority,
    Urgency,
};
use crate::mapping::adt::{summary_of, visit_of};
use crate::mapping::oru::observation_of;
use crate::mapping::read::{
    clean, coded_of, comp, doctor_of, entity_of, free_text, hd, list, note_of, one, sub, text_of,
    timestamp_of, warn_bad_time,
};
use crate::mapping::{Coded, EntityId, Header, MappingError, Timestamp, sanitize};
use crate::parse::{Element, Message, Segment};

/// The segments of the one order in a message.
#[derive(Default)]
struct Parts<'m> {
    pid: Option<Segment<'m>>,
    pv1: Option<Segment<'m>>,
    orc: Option<Segment<'m>>,
    obr: Option<Segment<'m>>,
    tq1: Option<Segment<'m>>,
    dg1: Vec<Segment<'m>>,
    notes: Vec<String>,
    attachments: Vec<Attachment>,
}

pub(in crate::mapping) fn map_order(
    message: &Message,
    h: Header,
) -> Result<ConsultationOrder, MappingError> {
    let mut warnings = Vec::new();
    let p = collect(message, &mut warnings)?;
    let orc = p.orc.ok_or_else(|| {
        MappingError::unusable(
            "ORC",
            "missing: an order message needs ORC-1 (order control)",
        )
    })?;
    let control = order_control(orc)?;
    let pid = p
        .pid
        .ok_or_else(|| MappingError::unusable("PID", "missing: an order needs its patient"))?;
    let patient = summary_of(pid, &mut warnings);
    if patient.identifiers.is_empty() {
        return Err(MappingError::unusable("PID-3", "no patient identifier"));
    }
    let obr = p.obr;
    let placer = number(orc, obr, 2, &mut warnings);
    let filler = number(orc, obr, 3, &mut warnings);
    if placer.is_none() && filler.is_none() {
        return Err(MappingError::unusable(
            "ORC-2",
            "no placer or filler order number (ORC-2, ORC-3, OBR-2, OBR-3): the order could never be answered or cancelled",
        ));
    }
    let requested_service = obr.and_then(|o| one(o, 4, coded_of));
    if control.action == OrderAction::New {
        check_new_service(obr, requested_service.as_ref())?;
    }
    let (urgency, priority) = urgency(p.tq1, orc, obr, &mut warnings);
    let requested_time = requested_time(p.tq1, orc, obr, &mut warnings);
    let transaction_time = one(orc, 9, timestamp_of);
    warn_bad_time(transaction_time.as_ref(), "ORC-9", &mut warnings);
    let visit = p.pv1.map(|pv1| visit_of(pv1, &mut warnings));
    let diagnoses = p
        .dg1
        .iter()
        .enumerate()
        .map(|(i, dg1)| diagnosis_of(*dg1, i + 1, &mut warnings))
        .collect();
    let clinical_info = obr.and_then(|o| free_text(o, 13));
    let case_summary = summary_text(clinical_info.as_deref(), &p.notes);
    warn_bad_time(h.event_time.as_ref(), "MSH-7", &mut warnings);
    Ok(ConsultationOrder {
        message_type: format!("{}^{}", h.message_type, h.trigger),
        event: h.trigger,
        event_time: h.event_time,
        control_id: h.control_id,
        requesting_facility: facility(orc, h.sending_facility.as_deref()),
        sending_application: h.sending_application,
        sending_facility: h.sending_facility,
        control,
        control_reason: one(orc, 16, coded_of),
        placer_order_number: placer,
        filler_order_number: filler,
        placer_group_number: one(orc, 4, entity_of),
        order_status: one(orc, 5, text_of).map(|s| s.to_ascii_uppercase()),
        transaction_time,
        patient,
        visit,
        ordering_provider: one(orc, 12, doctor_of)
            .or_else(|| obr.and_then(|o| one(o, 16, doctor_of))),
        urgency,
        priority,
        requested_time,
        requested_department: requested_service.as_ref().and_then(department_of),
        requested_service,
        reason_for_study: obr.map(|o| list(o, 31, coded_of)).unwrap_or_default(),
        diagnoses,
        clinical_info,
        notes: p.notes,
        case_summary,
        attachments: p.attachments,
        warnings,
    })
}

/// A new order (`NW`) must say what it asks for: an `OBR` with a code in `OBR-4.1`.
fn check_new_service(
    obr: Option<Segment<'_>>,
    service: Option<&Coded>,
) -> Result<(), MappingError> {
    match (obr, service) {
        (None, _) => Err(MappingError::unusable(
            "OBR",
            "missing: a new order (ORC-1 NW) needs the requested service (OBR-4)",
        )),
        (Some(_), None) => Err(MappingError::unusable(
            "OBR-4.1",
            "no requested service code: a new order (ORC-1 NW) needs one",
        )),
        (Some(_), Some(s)) if s.code.is_none() => Err(MappingError::unusable(
            "OBR-4.1",
            "no requested service code (only a text): a new order (ORC-1 NW) needs one",
        )),
        _ => Ok(()),
    }
}

/// Walks the segments once: the single `PID`, `PV1`, `ORC`, `OBR` and `TQ1`, every `DG1`,
/// and the `OBX`/`NTE` in order.
fn collect<'m>(
    message: &'m Message,
    warnings: &mut Vec<String>,
) -> Result<Parts<'m>, MappingError> {
    let mut p = Parts::default();
    let (mut pids, mut orcs, mut obrs, mut obxs) = (0usize, 0usize, 0usize, 0usize);
    let mut after_obx = false;
    for seg in message.segments() {
        let name = seg.name();
        match name {
            "PID" => {
                pids += 1;
                if pids > 1 {
                    return Err(MappingError::unusable(
                        format!("PID[{pids}]"),
                        "an order for several patients; the built-in mapping reads one patient per message (split it)",
                    ));
                }
                p.pid = Some(seg);
            }
            "PV1" if p.pv1.is_none() => p.pv1 = Some(seg),
            "ORC" | "OBR" => {
                let count = if name == "ORC" { &mut orcs } else { &mut obrs };
                *count += 1;
                if *count > 1 {
                    return Err(MappingError::unusable(
                        format!("{name}[{count}]"),
                        "several orders in one message; the built-in mapping reads one consultation request per message (split it)",
                    ));
                }
                if name == "ORC" {
                    p.orc = Some(seg);
                } else {
                    p.obr = Some(seg);
                }
            }
            "TQ1" => {
                if p.tq1.is_none() {
                    p.tq1 = Some(seg);
                } else {
                    warnings.push("TQ1[2]: a second timing segment; only the first is read".into());
                }
            }
            "DG1" => p.dg1.push(seg),
            "OBX" => {
                obxs += 1;
                p.attachments.push(attachment_of(seg, obxs, warnings));
            }
            "NTE" => {
                if let Some(note) = note_of(seg) {
                    match p.attachments.last_mut() {
                        Some(a) if after_obx => a.notes_mut().push(note),
                        _ => p.notes.push(note),
                    }
                }
            }
            // MSH, EVN, PD1, NK1, IN1, AL1, SPM, CTI, BLG, Z-segments …: not read (HL7-34).
            _ => {}
        }
        // An NTE after an OBX (and after other NTEs of it) belongs to the OBX.
        after_obx = match name {
            "OBX" => true,
            "NTE" => after_obx,
            _ => false,
        };
    }
    Ok(p)
}

fn order_control(orc: Segment<'_>) -> Result<OrderControl, MappingError> {
    let code = one(orc, 1, text_of)
        .map(|c| c.to_ascii_uppercase())
        .ok_or_else(|| MappingError::unusable("ORC-1", "no order control code"))?;
    let action = OrderAction::of(&code).ok_or_else(|| {
        MappingError::unusable(
            "ORC-1",
            format!(
                "{} is not an order control code of HL7 table 0119 (NW new, CA cancel, XO change, …)",
                sanitize(&code)
            ),
        )
    })?;
    Ok(OrderControl { code, action })
}

/// `ORC-n`, else `OBR-n` (2: placer, 3: filler), with a warning when both are sent and differ.
fn number(
    orc: Segment<'_>,
    obr: Option<Segment<'_>>,
    n: usize,
    warnings: &mut Vec<String>,
) -> Option<EntityId> {
    let from_orc = one(orc, n, entity_of);
    let from_obr = obr.and_then(|o| one(o, n, entity_of));
    match (from_orc, from_obr) {
        (Some(a), Some(b)) => {
            if a.id != b.id {
                warnings.push(format!("OBR-{n}: differs from ORC-{n}; ORC-{n} is used"));
            }
            Some(a)
        }
        (a, b) => a.or(b),
    }
}

/// Every place that holds a value, in order, with its path.
fn found_in<'m, T>(
    places: impl IntoIterator<Item = (&'static str, Option<Element<'m>>)>,
    read: impl Fn(Element<'m>) -> Option<T>,
) -> Vec<(&'static str, T)> {
    places
        .into_iter()
        .filter_map(|(path, e)| Some((path, read(e?)?)))
        .collect()
}

fn urgency(
    tq1: Option<Segment<'_>>,
    orc: Segment<'_>,
    obr: Option<Segment<'_>>,
    warnings: &mut Vec<String>,
) -> (Urgency, Option<Priority>) {
    let found = found_in(
        [
            (
                "TQ1-9",
                tq1.and_then(|s| s.field(9)).and_then(|f| f.component(1)),
            ),
            ("ORC-7.6", orc.field(7).and_then(|f| f.component(6))),
            (
                "OBR-27.6",
                obr.and_then(|s| s.field(27)).and_then(|f| f.component(6)),
            ),
            (
                "OBR-5",
                obr.and_then(|s| s.field(5)).and_then(|f| f.component(1)),
            ),
        ],
        |e| clean(Some(e)),
    );
    let mut iter = found.into_iter();
    let Some((path, code)) = iter.next() else {
        return (Urgency::Routine, None);
    };
    let urgency = Urgency::parse(&code).unwrap_or_else(|| {
        warnings.push(format!(
            "{path}: priority not in HL7 table 0027 (S, A, R, P, C, T, PRN); read as routine, kept as sent"
        ));
        Urgency::Routine
    });
    for (other, code) in iter {
        if Urgency::parse(&code).is_some_and(|u| u != urgency) {
            warnings.push(format!(
                "{other}: the priority differs from {path}; {path} is used"
            ));
        }
    }
    (
        urgency,
        Some(Priority {
            code,
            path: path.to_owned(),
        }),
    )
}

fn requested_time(
    tq1: Option<Segment<'_>>,
    orc: Segment<'_>,
    obr: Option<Segment<'_>>,
    warnings: &mut Vec<String>,
) -> Option<Timestamp> {
    // In a TQ the start time is a TS, whose own components are subcomponents here.
    let ts_in_tq = |e: Element<'_>| sub(e, 4, 1).map(|raw| Timestamp::parse(&raw));
    let found = [
        ("TQ1-7", tq1.and_then(|s| one(s, 7, timestamp_of))),
        ("ORC-7.4", orc.field(7).and_then(ts_in_tq)),
        ("OBR-27.4", obr.and_then(|s| s.field(27)).and_then(ts_in_tq)),
        ("OBR-6", obr.and_then(|s| one(s, 6, timestamp_of))),
    ]
    .into_iter()
    .find_map(|(path, t)| Some((path, t?)));
    let (path, t) = found?;
    warn_bad_time(Some(&t), path, warnings);
    Some(t)
}

fn facility(orc: Segment<'_>, msh4: Option<&str>) -> Option<OrderFacility> {
    if let Some(xon) = orc.field(21) {
        let id = comp(xon, 10).or_else(|| comp(xon, 3));
        let name = comp(xon, 1);
        if id.is_some() || name.is_some() {
            return Some(OrderFacility {
                id,
                name,
                path: "ORC-21".into(),
            });
        }
    }
    if let Some(ce) = orc.field(17) {
        let id = comp(ce, 1);
        let name = comp(ce, 2);
        if id.is_some() || name.is_some() {
            return Some(OrderFacility {
                id,
                name,
                path: "ORC-17".into(),
            });
        }
    }
    msh4.map(|id| OrderFacility {
        id: Some(id.to_owned()),
        name: None,
        path: "MSH-4".into(),
    })
}

fn diagnosis_of(dg1: Segment<'_>, n: usize, warnings: &mut Vec<String>) -> Diagnosis {
    let code = one(dg1, 3, coded_of);
    let icd10 = code.as_ref().and_then(|c| icd10_of(c, n, warnings));
    let time = one(dg1, 5, timestamp_of);
    warn_bad_time(time.as_ref(), &format!("DG1[{n}]-5"), warnings);
    Diagnosis {
        set_id: one(dg1, 1, text_of),
        icd10,
        code,
        description: free_text(dg1, 4),
        time,
        diagnosis_type: one(dg1, 6, text_of).map(|t| t.to_ascii_uppercase()),
    }
}

fn icd10_of(c: &Coded, n: usize, warnings: &mut Vec<String>) -> Option<String> {
    let named = |system: &Option<String>| system.as_deref().is_some_and(is_icd10_system);
    let (path, code) = if named(&c.system) {
        (format!("DG1[{n}]-3.1"), c.code.clone())
    } else if named(&c.alt_system) {
        (format!("DG1[{n}]-3.4"), c.alt_code.clone())
    } else if c.system.is_none() && c.code.as_deref().is_some_and(is_icd10_code) {
        return c.code.clone();
    } else {
        warnings.push(format!(
            "DG1[{n}]-3: no ICD-10 code (neither DG1-3.3 nor DG1-3.6 names ICD-10); kept as sent"
        ));
        return None;
    };
    match code {
        Some(code) if is_icd10_code(&code) => Some(code),
        Some(_) => {
            warnings.push(format!(
                "{path}: not an ICD-10 code although the coding system says so; kept as sent"
            ));
            None
        }
        None => {
            warnings.push(format!("{path}: empty, although a coding system is named"));
            None
        }
    }
}

fn summary_text(clinical_info: Option<&str>, notes: &[String]) -> Option<String> {
    let lines: Vec<&str> = clinical_info
        .into_iter()
        .chain(notes.iter().map(String::as_str))
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

fn attachment_of(obx: Segment<'_>, n: usize, warnings: &mut Vec<String>) -> Attachment {
    let value_type = one(obx, 2, text_of).map(|t| t.to_ascii_uppercase());
    let set_id = one(obx, 1, text_of);
    let code = one(obx, 3, coded_of);
    let value = obx.field(5).and_then(|f| f.repetition(1));
    let part = |c: usize| value.and_then(|v| comp(v, c));
    if let Some(c) = &code
        && names_study_uid(c)
    {
        match part(1) {
            Some(uid) if is_uid(&uid) => {
                return Attachment::DicomStudy {
                    set_id,
                    code,
                    study_uid: uid,
                    notes: Vec::new(),
                };
            }
            _ => warnings.push(format!(
                "OBX[{n}]-5: OBX-3 names a Study Instance UID but the value is not a DICOM UID; read as an observation"
            )),
        }
    }
    match value_type.as_deref() {
        Some("RP") => {
            if let Some(pointer) = part(1) {
                return Attachment::Reference {
                    set_id,
                    code,
                    pointer,
                    application: value.and_then(|v| hd(v, 2)),
                    data_type: part(3),
                    subtype: part(4),
                    notes: Vec::new(),
                };
            }
        }
        Some("ED") => {
            if let Some(data) = part(5) {
                return Attachment::Embedded {
                    set_id,
                    code,
                    data_type: part(2),
                    subtype: part(3),
                    encoding: part(4),
                    data,
                    notes: Vec::new(),
                };
            }
        }
        _ => {}
    }
    Attachment::Observation(Box::new(observation_of(obx, n, warnings)))
}
