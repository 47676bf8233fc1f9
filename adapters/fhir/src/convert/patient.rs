//! ADT → Patient (+ Encounter), the patient every other conversion refers to, and the
//! `ADT^A40` merge as `Patient.link` (FHIR-24).
//!
//! * The ADT patient is written as a conditional update on its first identifier (`PID-3`,
//!   else `PID-2`/`PID-4`): the message is the registry's statement of the patient. An
//!   element sent as the HL7 null `""` is left out, so the update removes it (HL7-32); one
//!   not sent is left out too (a FHIR update replaces the whole resource; docs/fhir.md).
//! * A patient that a result, order, appointment or document names is a conditional create
//!   on the same identifier: created when unknown, never overwritten.
//! * `ADT^A40`: per `PID`/`MRG` pair, the surviving patient (the `PID`) with `link`
//!   `replaces` → the retired one, and the retired one (`MRG-1` identifiers, `MRG-7`
//!   names) with `active` false and `link` `replaced-by` → the survivor.

use fhir_sdk::r4b::codes::{EncounterStatus, LinkType};
use fhir_sdk::r4b::resources::{
    Encounter, EncounterLocation, EncounterParticipant, Patient, PatientLink, Resource,
};
use fhir_sdk::r4b::types::{Identifier, Period};
use huizhen_hl7::Message;
use huizhen_hl7::mapping::{
    Address, Coded, Mapped, Merge, Name, PatientRecord, PatientSummary, Sex, Telecom, Timestamp,
    Visit, map,
};

use super::bundle::{Tx, Write};
use super::model::{
    V3_ACT_CODE, address, birth_date, built, coded, coding, concept_of, contact_point, date_time,
    doctor, ethnic_group, gender, human_name, identifier, logical_reference, patient_identifier,
    reference,
};
use super::{ConvertError, Ctx, split};

/// What a Patient is built from, whichever record it comes from.
#[derive(Default)]
pub(super) struct PatientView<'a> {
    pub identifiers: &'a [huizhen_hl7::mapping::Identifier],
    pub names: &'a [Name],
    pub birth: Option<&'a Timestamp>,
    pub sex: Option<Sex>,
    pub addresses: &'a [Address],
    pub home: &'a [Telecom],
    pub work: &'a [Telecom],
    pub marital: Option<&'a Coded>,
    pub ethnic: Option<&'a Coded>,
}

impl<'a> PatientView<'a> {
    fn of_record(r: &'a PatientRecord) -> PatientView<'a> {
        PatientView {
            identifiers: &r.identifiers,
            names: r.names.value().map_or(&[], Vec::as_slice),
            birth: r.birth_date.value(),
            sex: r.sex.value().map(|s| s.normalized),
            addresses: r.addresses.value().map_or(&[], Vec::as_slice),
            home: r.home_phones.value().map_or(&[], Vec::as_slice),
            work: r.business_phones.value().map_or(&[], Vec::as_slice),
            marital: r.marital_status.value(),
            ethnic: r.ethnic_group.value(),
        }
    }

    pub(super) fn of_summary(s: &'a PatientSummary) -> PatientView<'a> {
        PatientView {
            identifiers: &s.identifiers,
            names: &s.names,
            birth: s.birth_date.as_ref(),
            sex: s.sex.as_ref().map(|s| s.normalized),
            ..PatientView::default()
        }
    }
}

/// The Patient resource of a view.
pub(super) fn patient_resource(
    ctx: &Ctx<'_>,
    v: &PatientView<'_>,
) -> Result<Patient, ConvertError> {
    let mut p = built(Patient::builder().build(), "Patient")?;
    for i in v.identifiers {
        p.identifier.push(Some(patient_identifier(ctx, i)?));
    }
    p.active = Some(true);
    for n in v.names {
        p.name.push(Some(human_name(n)?));
    }
    for (list, work) in [(v.home, false), (v.work, true)] {
        for t in list {
            if let Some(c) = contact_point(t, work)? {
                p.telecom.push(Some(c));
            }
        }
    }
    p.gender = v.sex.map(gender);
    p.birth_date = v.birth.and_then(birth_date);
    for a in v.addresses {
        p.address.push(Some(address(a)?));
    }
    if let Some(m) = v.marital {
        p.marital_status = coded(ctx.maps, "PID-16", m)?;
    }
    if let Some(e) = v.ethnic
        && let Some(ext) = ethnic_group(ctx.maps, e)?
    {
        p.extension.push(ext);
    }
    Ok(p)
}

/// The patient a result, order, appointment or document names: a conditional create on its
/// first identifier. `None` (no entry) when the `PID` has no identifier.
pub(super) fn referenced_patient(
    tx: &mut Tx,
    ctx: &Ctx<'_>,
    summary: &PatientSummary,
) -> Result<Option<String>, ConvertError> {
    let Some(first) = summary.identifiers.first() else {
        return Ok(None);
    };
    let id = patient_identifier(ctx, first)?;
    if let Some(u) = tx.existing("Patient", &id) {
        return Ok(Some(u.to_owned()));
    }
    let p = patient_resource(ctx, &PatientView::of_summary(summary))?;
    tx.add("Patient", &id, Write::CreateIfNone, Resource::Patient(p))
        .map(Some)
}

fn patient_record(message: &Message) -> Result<PatientRecord, ConvertError> {
    match map(message) {
        Ok(Mapped::Patient(p)) => Ok(*p),
        Ok(_) => Err(ConvertError::at("MSH-9", "not an ADT message")),
        Err(e) => Err(ConvertError::at(e.path(), mapping_reason(&e))),
    }
}

/// The reason of a mapping error without its path (the path is kept apart).
pub(super) fn mapping_reason(e: &huizhen_hl7::mapping::MappingError) -> String {
    match e {
        huizhen_hl7::mapping::MappingError::Unusable { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// `ADT^A01/A04/A05/A08/A28/A31/A40`.
pub(super) fn adt(
    message: &Message,
    ctx: &Ctx<'_>,
    trigger: &str,
    tx: &mut Tx,
    warnings: &mut Vec<String>,
) -> Result<(), ConvertError> {
    if trigger == "A40" {
        let groups = split::by_segment(message, "PID")?;
        let n = groups.len();
        for g in groups {
            let rec = patient_record(&g.message).map_err(|e| e.in_group("PATIENT", g.number, n))?;
            prefix_warnings(warnings, "PATIENT", g.number, n, rec.warnings.clone());
            merge(tx, ctx, &rec)?;
        }
        return Ok(());
    }
    let rec = patient_record(message)?;
    warnings.extend(rec.warnings.iter().cloned());
    let id = first_identifier(ctx, &rec)?;
    let p = patient_resource(ctx, &PatientView::of_record(&rec))?;
    let patient = tx.add("Patient", &id, Write::Update, Resource::Patient(p))?;
    if let (Some(visit), "A01" | "A04") = (&rec.visit, trigger) {
        encounter(tx, ctx, trigger, visit, &patient)?;
    }
    Ok(())
}

pub(super) fn prefix_warnings(
    out: &mut Vec<String>,
    group: &str,
    n: usize,
    groups: usize,
    warnings: Vec<String>,
) {
    for w in warnings {
        if groups > 1 {
            out.push(format!("{group}[{n}]: {w}"));
        } else {
            out.push(w);
        }
    }
}

fn first_identifier(ctx: &Ctx<'_>, rec: &PatientRecord) -> Result<Identifier, ConvertError> {
    let first = rec
        .identifiers
        .first()
        .ok_or_else(|| ConvertError::at("PID-3", "no patient identifier"))?;
    patient_identifier(ctx, first)
}

/// One `PID`/`MRG` pair of an `ADT^A40`.
fn merge(tx: &mut Tx, ctx: &Ctx<'_>, rec: &PatientRecord) -> Result<(), ConvertError> {
    let Some(m) = &rec.merge else {
        return Err(ConvertError::at("MRG", "missing: an ADT^A40 needs MRG-1"));
    };
    let survivor_id = first_identifier(ctx, rec)?;
    let retired_id = retired_identifier(ctx, m)?;
    // The fullUrls are fixed before either resource is built, so each can point at the other.
    let mut survivor = patient_resource(ctx, &PatientView::of_record(rec))?;
    let mut retired = patient_resource(
        ctx,
        &PatientView {
            identifiers: &m.prior_identifiers,
            names: &m.prior_names,
            ..PatientView::default()
        },
    )?;
    retired.active = Some(false);
    let (s_url, r_url) = (
        tx.url_for("Patient", &survivor_id),
        tx.url_for("Patient", &retired_id),
    );
    survivor.link.push(Some(link(&r_url, LinkType::Replaces)?));
    retired.link.push(Some(link(&s_url, LinkType::ReplacedBy)?));
    tx.add(
        "Patient",
        &survivor_id,
        Write::Update,
        Resource::Patient(survivor),
    )?;
    tx.add(
        "Patient",
        &retired_id,
        Write::Update,
        Resource::Patient(retired),
    )?;
    Ok(())
}

fn retired_identifier(ctx: &Ctx<'_>, m: &Merge) -> Result<Identifier, ConvertError> {
    let first = m
        .prior_identifiers
        .first()
        .ok_or_else(|| ConvertError::at("MRG-1", "no prior patient identifier"))?;
    patient_identifier(ctx, first)
}

fn link(full_url: &str, t: LinkType) -> Result<PatientLink, ConvertError> {
    built(
        PatientLink::builder()
            .other(reference(full_url, None)?)
            .r#type(t)
            .build(),
        "Patient.link",
    )
}

/// The Encounter of an `A01`/`A04`: a conditional update on the visit number (`PV1-19`),
/// else on `MSH-10` (so a replay is still one Encounter).
fn encounter(
    tx: &mut Tx,
    ctx: &Ctx<'_>,
    trigger: &str,
    visit: &Visit,
    patient: &str,
) -> Result<(), ConvertError> {
    let class_code = visit
        .patient_class
        .value()
        .and_then(|c| {
            ctx.maps
                .value("PV1-2", c)
                .map(str::to_owned)
                .or_else(|| default_class(c).map(str::to_owned))
        })
        .unwrap_or_else(|| if trigger == "A01" { "IMP" } else { "AMB" }.to_owned());
    let status = if trigger == "A01" {
        EncounterStatus::InProgress
    } else {
        EncounterStatus::Arrived
    };
    let class = coding(Some(V3_ACT_CODE.into()), Some(class_code), None)?;
    let mut e = built(
        Encounter::builder().status(status).class(class).build(),
        "Encounter",
    )?;
    let id = match visit.visit_number.value() {
        Some(v) => identifier(ctx, &v.id, v.assigning_authority.as_deref(), Some("VN"))?,
        None => message_identifier(ctx, "visit")?,
    };
    e.identifier.push(Some(id.clone()));
    e.subject = Some(reference(patient, None)?);
    if let Some(start) = visit.admit_time.value().and_then(|t| date_time(ctx, t)) {
        let mut p = built(Period::builder().build(), "Period")?;
        p.start = Some(start);
        e.period = Some(p);
    }
    if let Some(doctors) = visit.attending_doctors.value() {
        for d in doctors {
            if let Some(r) = doctor(ctx, d)? {
                let mut part = built(
                    EncounterParticipant::builder().build(),
                    "Encounter.participant",
                )?;
                part.r#type.push(Some(concept_of(
                    "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "ATND",
                    Some("attender"),
                )?));
                part.individual = Some(r);
                e.participant.push(Some(part));
            }
        }
    }
    if let Some(loc) = visit.location.value() {
        let text: Vec<&str> = [&loc.point_of_care, &loc.room, &loc.bed, &loc.facility]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if !text.is_empty() {
            let r = logical_reference("Location", None, Some(text.join(" ")))?;
            e.location.push(Some(built(
                EncounterLocation::builder().location(r).build(),
                "Encounter.location",
            )?));
        }
    }
    if let Some(service) = visit.hospital_service.value() {
        let c = Coded {
            code: Some(service.clone()),
            ..Coded::default()
        };
        e.service_type = coded(ctx.maps, "PV1-10", &c)?;
    }
    tx.add("Encounter", &id, Write::Update, Resource::Encounter(e))?;
    Ok(())
}

/// HL7 table 0004 (patient class) → v3 ActCode.
fn default_class(code: &str) -> Option<&'static str> {
    Some(match code.trim().to_ascii_uppercase().as_str() {
        "I" | "B" => "IMP",
        "O" | "R" | "C" => "AMB",
        "E" => "EMER",
        "P" => "PRENC",
        _ => return None,
    })
}

/// An identifier made from the message (`MSH-10` and a suffix), for what carries none: its
/// system names the sending facility's HL7 messages.
pub(super) fn message_identifier(ctx: &Ctx<'_>, suffix: &str) -> Result<Identifier, ConvertError> {
    let control = ctx.control_id.ok_or_else(|| {
        ConvertError::at(
            "MSH-10",
            format!("no message control id, and nothing else identifies the {suffix}"),
        )
    })?;
    let mut id = built(Identifier::builder().build(), "Identifier")?;
    id.system = Some(format!(
        "urn:huizhen:hl7-message:{}",
        super::codes::percent_encode(ctx.facility.unwrap_or("local"))
    ));
    id.value = Some(format!("{control}/{suffix}"));
    Ok(id)
}
