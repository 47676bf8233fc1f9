//! `ORU^R01` → per patient (`PATIENT_RESULT` group, one per `PID`): the Patient (conditional
//! create), and per `OBR` a DiagnosticReport with an Observation per `OBX` (conditional
//! updates: a corrected result replaces the preliminary one).
//!
//! Identifiers: the report's is the filler order number (`OBR-3`, else `ORC-3`), else the
//! placer's, else one made from `MSH-10`; an Observation's is the report's value with
//! `/<OBX-3.1>` (and `/<OBX-4>` when sent). An `ED` result (a PDF report) is the report's
//! `presentedForm`, not an Observation (R4 Observations have no attachment value).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fhir_sdk::Base64Binary;
use fhir_sdk::r4b::codes::{DiagnosticReportStatus, ObservationStatus, QuantityComparator};
use fhir_sdk::r4b::resources::{
    DiagnosticReport, DiagnosticReportEffective, Observation, ObservationEffective,
    ObservationReferenceRange, ObservationValue, Resource,
};
use fhir_sdk::r4b::types::{Attachment, Identifier, Quantity};
use huizhen_hl7::Message;
use huizhen_hl7::mapping::{
    Coded, EntityId, Mapped, Observation as V2Observation, ObservationValue as V2Value,
    Observations, Order, map,
};

use super::bundle::{Tx, Write};
use super::model::{
    annotation, built, coded, coded_or_text, coding, concept, date_time, identifier,
    logical_reference, reference,
};
use super::patient::{mapping_reason, message_identifier, prefix_warnings, referenced_patient};
use super::{ConvertError, Ctx, split};

const INTERPRETATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
const UCUM: &str = "http://unitsofmeasure.org";

pub(super) fn oru(
    message: &Message,
    ctx: &Ctx<'_>,
    tx: &mut Tx,
    warnings: &mut Vec<String>,
) -> Result<(), ConvertError> {
    let groups = split::by_segment(message, "PID")?;
    let n = groups.len();
    for g in groups {
        let results = match map(&g.message) {
            Ok(Mapped::Observations(o)) => *o,
            Ok(_) => return Err(ConvertError::at("MSH-9", "not an ORU^R01")),
            Err(e) => {
                return Err(ConvertError::at(e.path(), mapping_reason(&e)).in_group(
                    "PATIENT_RESULT",
                    g.number,
                    n,
                ));
            }
        };
        let mut w = Vec::new();
        group(tx, ctx, &results, g.number, &mut w)
            .map_err(|e| e.in_group("PATIENT_RESULT", g.number, n))?;
        prefix_warnings(
            warnings,
            "PATIENT_RESULT",
            g.number,
            n,
            results.warnings.clone(),
        );
        prefix_warnings(warnings, "PATIENT_RESULT", g.number, n, w);
    }
    Ok(())
}

fn group(
    tx: &mut Tx,
    ctx: &Ctx<'_>,
    results: &Observations,
    group: usize,
    warnings: &mut Vec<String>,
) -> Result<(), ConvertError> {
    let patient = match &results.patient {
        Some(p) => referenced_patient(tx, ctx, p)?,
        None => None,
    };
    let mut obx = 0;
    for (k, order) in results.orders.iter().enumerate() {
        report(
            tx,
            ctx,
            order,
            patient.as_deref(),
            (group, k + 1),
            &mut obx,
            warnings,
        )?;
    }
    Ok(())
}

fn order_identifier(
    ctx: &Ctx<'_>,
    e: &EntityId,
    type_code: &str,
) -> Result<Identifier, ConvertError> {
    identifier(ctx, &e.id, e.namespace.as_deref(), Some(type_code))
}

fn report(
    tx: &mut Tx,
    ctx: &Ctx<'_>,
    order: &Order,
    patient: Option<&str>,
    (group, k): (usize, usize),
    obx: &mut usize,
    warnings: &mut Vec<String>,
) -> Result<(), ConvertError> {
    let id = match (&order.filler_number, &order.placer_number) {
        (Some(f), _) => order_identifier(ctx, f, "FILL")?,
        (None, Some(p)) => order_identifier(ctx, p, "PLAC")?,
        (None, None) => message_identifier(ctx, &format!("report/{group}/{k}"))?,
    };
    let status = order
        .result_status
        .as_deref()
        .and_then(|s| {
            ctx.maps
                .value("OBR-25", s)
                .and_then(|c| c.parse().ok())
                .or_else(|| report_status(s))
        })
        .unwrap_or(DiagnosticReportStatus::Unknown);
    let code = coded_or_text(ctx.maps, "OBR-4", order.service.as_ref(), "Results")?;
    let mut dr = built(
        DiagnosticReport::builder()
            .status(status)
            .code(code)
            .build(),
        "DiagnosticReport",
    )?;
    dr.identifier.push(Some(id.clone()));
    if let (Some(p), Some(_)) = (&order.placer_number, &order.filler_number) {
        dr.based_on.push(Some(logical_reference(
            "ServiceRequest",
            Some(order_identifier(ctx, p, "PLAC")?),
            None,
        )?));
    }
    if let Some(p) = patient {
        dr.subject = Some(reference(p, None)?);
    }
    let effective = order
        .observation_time
        .as_ref()
        .and_then(|t| date_time(ctx, t));
    dr.effective = effective.clone().map(DiagnosticReportEffective::DateTime);
    if !order.notes.is_empty() {
        dr.conclusion = Some(order.notes.join("\n"));
    }
    let base = id.value.clone().unwrap_or_default();
    let mut used = Vec::new();
    let mut observations = Vec::new();
    for o in &order.observations {
        *obx += 1;
        let path = format!("OBX[{obx}]");
        if o.value_type.as_deref() == Some("ED") {
            for v in &o.values {
                if let V2Value::Raw { text } = v {
                    dr.presented_form.push(Some(ed_attachment(text, &path)?));
                }
            }
            continue;
        }
        let mut key = o
            .code
            .as_ref()
            .and_then(|c| c.code.clone())
            .or_else(|| o.set_id.clone())
            .unwrap_or_else(|| obx.to_string());
        if let Some(sub) = &o.sub_id {
            key = format!("{key}/{sub}");
        }
        let mut unique = key.clone();
        let mut n = 1;
        while used.contains(&unique) {
            n += 1;
            unique = format!("{key}#{n}");
        }
        used.push(unique.clone());
        let mut oid = id.clone();
        oid.r#type = None;
        oid.r#use = None;
        oid.value = Some(format!("{base}/{unique}"));
        let obs = observation(ctx, o, patient, effective.clone(), &path, warnings)?;
        observations.push((oid, obs));
    }
    for (oid, _) in &observations {
        dr.result
            .push(Some(reference(&tx.url_for("Observation", oid), None)?));
    }
    tx.add(
        "DiagnosticReport",
        &id,
        Write::Update,
        Resource::DiagnosticReport(dr),
    )?;
    for (oid, mut obs) in observations {
        obs.identifier.push(Some(oid.clone()));
        tx.add(
            "Observation",
            &oid,
            Write::Update,
            Resource::Observation(obs),
        )?;
    }
    Ok(())
}

fn observation(
    ctx: &Ctx<'_>,
    o: &V2Observation,
    patient: Option<&str>,
    report_time: Option<fhir_sdk::DateTime>,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<Observation, ConvertError> {
    let status = o
        .result_status
        .as_deref()
        .and_then(|s| {
            ctx.maps
                .value("OBX-11", s)
                .and_then(|c| c.parse().ok())
                .or_else(|| observation_status(s))
        })
        .unwrap_or(ObservationStatus::Unknown);
    let code = coded_or_text(ctx.maps, "OBX-3", o.code.as_ref(), "unknown")?;
    let mut obs = built(
        Observation::builder().status(status).code(code).build(),
        "Observation",
    )?;
    if let Some(p) = patient {
        obs.subject = Some(reference(p, None)?);
    }
    obs.effective = o
        .observation_time
        .as_ref()
        .and_then(|t| date_time(ctx, t))
        .or(report_time)
        .map(ObservationEffective::DateTime);
    obs.value = value(ctx, o, path, warnings)?;
    for flag in &o.abnormal_flags {
        let code = ctx
            .maps
            .value("OBX-8", flag)
            .map_or_else(|| flag.trim().to_ascii_uppercase(), str::to_owned);
        obs.interpretation.push(Some(concept(
            vec![coding(Some(INTERPRETATION.into()), Some(code), None)?],
            None,
        )?));
    }
    if let Some(range) = &o.reference_range {
        obs.reference_range
            .push(Some(reference_range(ctx, range, o.units.as_ref())?));
    }
    for n in &o.notes {
        obs.note.push(Some(annotation(n)?));
    }
    Ok(obs)
}

fn value(
    ctx: &Ctx<'_>,
    o: &V2Observation,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<ObservationValue>, ConvertError> {
    if o.values.is_empty() {
        return Ok(None);
    }
    // Several text repetitions are one text, a line each.
    if o.values.iter().all(|v| matches!(v, V2Value::Text { .. })) {
        let lines: Vec<&str> = o
            .values
            .iter()
            .filter_map(|v| match v {
                V2Value::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        return Ok(Some(ObservationValue::String(lines.join("\n"))));
    }
    if o.values.len() > 1 {
        warnings.push(format!(
            "{path}-5: {} repetitions; the first is the value",
            o.values.len()
        ));
    }
    Ok(Some(match &o.values[0] {
        V2Value::Numeric {
            number: Some(n), ..
        } => ObservationValue::Quantity(quantity(ctx, *n, None, o.units.as_ref())?),
        V2Value::Numeric { text, number: None } => ObservationValue::String(text.clone()),
        V2Value::Text { text } => ObservationValue::String(text.clone()),
        V2Value::Coded(c) => match coded(ctx.maps, "", c)? {
            Some(cc) => ObservationValue::CodeableConcept(cc),
            None => return Ok(None),
        },
        V2Value::Raw { text } => raw_value(ctx, o, text)?,
    }))
}

/// `SN` (`<^500`, `^7.5`) as a Quantity with its comparator, `DT`/`TS`/`DTM` as a dateTime,
/// anything else as the text.
fn raw_value(
    ctx: &Ctx<'_>,
    o: &V2Observation,
    text: &str,
) -> Result<ObservationValue, ConvertError> {
    match o.value_type.as_deref() {
        Some("SN") => {
            let parts: Vec<&str> = text.split('^').collect();
            let only_number = parts.len() <= 2 || parts[2..].iter().all(|p| p.is_empty());
            if only_number && let Some(n) = parts.get(1).and_then(|n| n.trim().parse::<f64>().ok())
            {
                let comparator = match parts[0].trim() {
                    "" | "=" => None,
                    c => match c.parse::<QuantityComparator>() {
                        Ok(q) => Some(q),
                        Err(_) => return Ok(ObservationValue::String(text.to_owned())),
                    },
                };
                return Ok(ObservationValue::Quantity(quantity(
                    ctx,
                    n,
                    comparator,
                    o.units.as_ref(),
                )?));
            }
            Ok(ObservationValue::String(text.to_owned()))
        }
        Some("DT" | "TS" | "DTM") => {
            let t = huizhen_hl7::mapping::Timestamp::parse(text);
            Ok(match date_time(ctx, &t) {
                Some(d) => ObservationValue::DateTime(d),
                None => ObservationValue::String(text.to_owned()),
            })
        }
        _ => Ok(ObservationValue::String(text.to_owned())),
    }
}

/// A Quantity in the units of `OBX-6`: a mapped unit (code maps, `OBX-6`), else UCUM when
/// `OBX-6.3` names it, else the unit as text only (a `code` needs a `system`).
fn quantity(
    ctx: &Ctx<'_>,
    value: f64,
    comparator: Option<QuantityComparator>,
    units: Option<&Coded>,
) -> Result<Quantity, ConvertError> {
    let mut q = built(Quantity::builder().build(), "Quantity")?;
    q.value = Some(value);
    q.comparator = comparator;
    if let Some(u) = units {
        q.unit = u.text.clone().or_else(|| u.code.clone());
        if let Some(t) = ctx
            .maps
            .code("OBX-6", u.system.as_deref(), u.code.as_deref())
        {
            q.system = Some(t.system.clone());
            q.code = Some(t.code.clone());
        } else if ctx.maps.code_system(u.system.as_deref()) == UCUM {
            q.system = Some(UCUM.into());
            q.code = u.code.clone();
        }
    }
    Ok(q)
}

/// `3.9-6.1`, `<5`, `>=10` as low/high in the value's units; anything else as text.
fn reference_range(
    ctx: &Ctx<'_>,
    range: &str,
    units: Option<&Coded>,
) -> Result<ObservationReferenceRange, ConvertError> {
    let mut rr = built(
        ObservationReferenceRange::builder().build(),
        "Observation.referenceRange",
    )?;
    let num = |s: &str| s.trim().parse::<f64>().ok();
    let r = range.trim();
    let (low, high) = if let Some(v) = r.strip_prefix("<=").or_else(|| r.strip_prefix('<')) {
        (None, num(v))
    } else if let Some(v) = r.strip_prefix(">=").or_else(|| r.strip_prefix('>')) {
        (num(v), None)
    } else {
        // The dash between the bounds is the first one after the first character (a
        // leading minus belongs to the low bound).
        match r
            .char_indices()
            .skip(1)
            .find(|(_, c)| *c == '-' || *c == '~')
        {
            Some((i, _)) => (num(&r[..i]), num(&r[i + 1..])),
            None => (None, None),
        }
    };
    if low.is_none() && high.is_none() {
        rr.text = Some(range.to_owned());
    } else {
        rr.low = low.map(|v| quantity(ctx, v, None, units)).transpose()?;
        rr.high = high.map(|v| quantity(ctx, v, None, units)).transpose()?;
    }
    Ok(rr)
}

/// An `ED` value (`source^type^subtype^encoding^data`) as an Attachment.
pub(super) fn ed_attachment(text: &str, path: &str) -> Result<Attachment, ConvertError> {
    let parts: Vec<&str> = text.split('^').collect();
    let part = |i: usize| parts.get(i).map(|s| s.trim()).filter(|s| !s.is_empty());
    let (kind, subtype, encoding, data) = (
        part(1),
        part(2),
        part(3),
        parts.get(4).copied().unwrap_or(""),
    );
    let bytes = match encoding.map(str::to_ascii_uppercase).as_deref() {
        Some("BASE64") => {
            let clean: String = data.chars().filter(|c| !c.is_whitespace()).collect();
            STANDARD.decode(clean.as_bytes()).map_err(|_| {
                ConvertError::at(format!("{path}-5.5"), "ED data is not valid Base64")
            })?
        }
        Some("HEX") => hex::decode(data.trim())
            .map_err(|_| ConvertError::at(format!("{path}-5.5"), "ED data is not valid hex"))?,
        _ => data.as_bytes().to_vec(),
    };
    let mut a = built(Attachment::builder().build(), "Attachment")?;
    a.content_type = Some(media_type(kind, subtype));
    a.data = Some(Base64Binary(bytes));
    Ok(a)
}

/// An HL7 type of data (table 0191) and subtype as a media type.
pub(super) fn media_type(kind: Option<&str>, subtype: Option<&str>) -> String {
    let sub = subtype.map(str::to_ascii_lowercase);
    match (kind.map(str::to_ascii_uppercase).as_deref(), sub.as_deref()) {
        (_, Some("pdf")) => "application/pdf".into(),
        (_, Some("rtf")) => "application/rtf".into(),
        (_, Some("html")) => "text/html".into(),
        (_, Some("xml")) => "application/xml".into(),
        (_, Some("jpeg" | "jpg")) => "image/jpeg".into(),
        (_, Some("png")) => "image/png".into(),
        (_, Some("tiff")) => "image/tiff".into(),
        (_, Some("dicom")) => "application/dicom".into(),
        (Some("TEXT"), _) => "text/plain".into(),
        (Some("IM" | "IMAGE"), Some(s)) => format!("image/{s}"),
        (Some("AP" | "APPLICATION"), Some(s)) => format!("application/{s}"),
        _ => "application/octet-stream".into(),
    }
}

/// HL7 table 0123 (OBR-25) → DiagnosticReport.status.
fn report_status(code: &str) -> Option<DiagnosticReportStatus> {
    Some(match code.trim().to_ascii_uppercase().as_str() {
        "F" => DiagnosticReportStatus::Final,
        "C" => DiagnosticReportStatus::Corrected,
        "P" | "R" => DiagnosticReportStatus::Preliminary,
        "A" | "S" => DiagnosticReportStatus::Partial,
        "I" | "O" => DiagnosticReportStatus::Registered,
        "X" => DiagnosticReportStatus::Cancelled,
        _ => return None,
    })
}

/// HL7 table 0085 (OBX-11) → Observation.status.
fn observation_status(code: &str) -> Option<ObservationStatus> {
    Some(match code.trim().to_ascii_uppercase().as_str() {
        "F" | "U" => ObservationStatus::Final,
        "C" => ObservationStatus::Corrected,
        "P" | "R" | "S" => ObservationStatus::Preliminary,
        "I" | "O" => ObservationStatus::Registered,
        "X" | "N" => ObservationStatus::Cancelled,
        "D" | "W" => ObservationStatus::EnteredInError,
        _ => return None,
    })
}
