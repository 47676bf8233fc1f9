//! `ORM^O01` / `OML^O21` → per `ORC` a ServiceRequest (conditional update on the placer order
//! number, else the filler's), and the Patient (conditional create). Each order is read by the
//! hl7v2 crate's order mapping (`ConsultationOrder`: the field precedence between versions,
//! priorities, diagnoses, attachments).
//!
//! Status: the `ORC-5` order status when sent (table 0038), else the `ORC-1` control (table
//! 0119: `NW` active, `CA`/`DC` revoked, `HD` on-hold, …); code maps (`values.ORC-5`,
//! `values.ORC-1`) come first. Intent `order`; priority from the urgency (routine, urgent,
//! stat).

use fhir_sdk::r4b::codes::{RequestIntent, RequestPriority, RequestStatus};
use fhir_sdk::r4b::resources::{Resource, ServiceRequest, ServiceRequestOccurrence};
use fhir_sdk::r4b::types::Identifier;
use huizhen_hl7::Message;
use huizhen_hl7::mapping::{
    Attachment, Coded, ConsultationOrder, EntityId, Mapped, OrderAction, Urgency, map,
};

use super::bundle::{Tx, Write};
use super::model::{
    annotation, built, coded, coded_or_text, concept, concept_of, date_time, doctor, identifier,
    logical_reference, reference,
};
use super::patient::{mapping_reason, prefix_warnings, referenced_patient};
use super::{ConvertError, Ctx, split};

const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";

pub(super) fn orders(
    message: &Message,
    ctx: &Ctx<'_>,
    tx: &mut Tx,
    warnings: &mut Vec<String>,
) -> Result<(), ConvertError> {
    let groups = split::by_order(message)?;
    let n = groups.len();
    for g in groups {
        let order = match map(&g.message) {
            Ok(Mapped::Order(o)) => *o,
            Ok(_) => return Err(ConvertError::at("MSH-9", "not an order message")),
            Err(e) => {
                return Err(
                    ConvertError::at(e.path(), mapping_reason(&e)).in_group("ORDER", g.number, n)
                );
            }
        };
        service_request(tx, ctx, &order).map_err(|e| e.in_group("ORDER", g.number, n))?;
        prefix_warnings(warnings, "ORDER", g.number, n, order.warnings.clone());
    }
    Ok(())
}

fn entity(ctx: &Ctx<'_>, e: &EntityId, type_code: &str) -> Result<Identifier, ConvertError> {
    identifier(ctx, &e.id, e.namespace.as_deref(), Some(type_code))
}

fn service_request(tx: &mut Tx, ctx: &Ctx<'_>, o: &ConsultationOrder) -> Result<(), ConvertError> {
    let placer = o
        .placer_order_number
        .as_ref()
        .map(|e| entity(ctx, e, "PLAC"))
        .transpose()?;
    let filler = o
        .filler_order_number
        .as_ref()
        .map(|e| entity(ctx, e, "FILL"))
        .transpose()?;
    let key = placer
        .clone()
        .or_else(|| filler.clone())
        .ok_or_else(|| ConvertError::at("ORC-2", "no placer or filler order number"))?;
    let patient = referenced_patient(tx, ctx, &o.patient)?
        .ok_or_else(|| ConvertError::at("PID-3", "no patient identifier"))?;
    let status = status(ctx, o);
    let mut sr = built(
        ServiceRequest::builder()
            .status(status)
            .intent(RequestIntent::Order)
            .subject(reference(&patient, None)?)
            .build(),
        "ServiceRequest",
    )?;
    sr.identifier = [placer, filler].into_iter().flatten().map(Some).collect();
    sr.requisition = o
        .placer_group_number
        .as_ref()
        .map(|e| entity(ctx, e, "PGN"))
        .transpose()?;
    sr.priority = Some(match o.urgency {
        Urgency::Routine => RequestPriority::Routine,
        Urgency::Urgent => RequestPriority::Urgent,
        Urgency::Critical => RequestPriority::Stat,
    });
    sr.code = Some(coded_or_text(
        ctx.maps,
        "OBR-4",
        o.requested_service.as_ref(),
        "unknown",
    )?);
    // The department read from OBR-4 only when the service text named one (`远程心内科会诊`
    // → `心内科`); for a lab order the "department" is the test itself.
    let service_text = o.requested_service.as_ref().and_then(|s| s.text.as_deref());
    if let Some(d) = &o.requested_department
        && d.name.is_some()
        && d.name.as_deref() != service_text
    {
        let c = Coded {
            code: d.code.clone(),
            text: d.name.clone(),
            system: d.system.clone(),
            ..Coded::default()
        };
        sr.performer_type = coded(ctx.maps, "OBR-4", &c)?;
    }
    sr.authored_on = o.transaction_time.as_ref().and_then(|t| date_time(ctx, t));
    sr.occurrence = o
        .requested_time
        .as_ref()
        .and_then(|t| date_time(ctx, t))
        .map(ServiceRequestOccurrence::DateTime);
    if let Some(d) = &o.ordering_provider {
        sr.requester = doctor(ctx, d)?;
    }
    for r in &o.reason_for_study {
        if let Some(cc) = coded(ctx.maps, "OBR-31", r)? {
            sr.reason_code.push(Some(cc));
        }
    }
    for d in &o.diagnoses {
        let cc = match (&d.icd10, &d.code) {
            (Some(icd), code) => {
                let mut cc = concept_of(ICD10, icd, code.as_ref().and_then(|c| c.text.as_deref()))?;
                if let Some(c) = code
                    && let Some(mut mapped) = coded(ctx.maps, "DG1-3", c)?
                {
                    let more = std::mem::take(&mut mapped.coding);
                    cc.coding.extend(more.into_iter().filter(|m| {
                        m.as_ref().and_then(|m| m.code.as_deref()) != Some(icd.as_str())
                    }));
                }
                cc.text = d.description.clone().or_else(|| cc.text.clone());
                Some(cc)
            }
            (None, Some(c)) => coded(ctx.maps, "DG1-3", c)?,
            (None, None) => d
                .description
                .clone()
                .map(|t| concept(Vec::new(), Some(t)))
                .transpose()?,
        };
        if let Some(cc) = cc {
            sr.reason_code.push(Some(cc));
        }
    }
    for n in o.clinical_info.iter().chain(&o.notes) {
        sr.note.push(Some(annotation(n)?));
    }
    for a in &o.attachments {
        if let Attachment::DicomStudy { study_uid, .. } = a {
            let mut id = built(Identifier::builder().build(), "Identifier")?;
            id.system = Some("urn:dicom:uid".into());
            id.value = Some(format!("urn:oid:{study_uid}"));
            sr.supporting_info
                .push(Some(logical_reference("ImagingStudy", Some(id), None)?));
        }
    }
    tx.add(
        "ServiceRequest",
        &key,
        Write::Update,
        Resource::ServiceRequest(sr),
    )?;
    Ok(())
}

fn status(ctx: &Ctx<'_>, o: &ConsultationOrder) -> RequestStatus {
    let mapped = |table: &str, code: &str| -> Option<RequestStatus> {
        ctx.maps.value(table, code).and_then(|c| c.parse().ok())
    };
    if let Some(s) = o.order_status.as_deref()
        && let Some(st) = mapped("ORC-5", s).or_else(|| order_status(s))
    {
        return st;
    }
    if let Some(st) = mapped("ORC-1", &o.control.code) {
        return st;
    }
    match o.control.action {
        OrderAction::New | OrderAction::Change | OrderAction::Release => RequestStatus::Active,
        OrderAction::Cancel => RequestStatus::Revoked,
        OrderAction::Hold => RequestStatus::OnHold,
        OrderAction::Status | OrderAction::Other => RequestStatus::Unknown,
    }
}

/// HL7 table 0038 (ORC-5) → ServiceRequest.status.
fn order_status(code: &str) -> Option<RequestStatus> {
    Some(match code.trim().to_ascii_uppercase().as_str() {
        "A" | "IP" | "SC" => RequestStatus::Active,
        "CM" => RequestStatus::Completed,
        "CA" | "DC" => RequestStatus::Revoked,
        "HD" => RequestStatus::OnHold,
        "ER" => RequestStatus::EnteredInError,
        _ => return None,
    })
}
