//! `MDM^T02` (original document notification and content) → DocumentReference (conditional
//! update on the unique document number `TXA-12`), and the Patient (conditional create).
//!
//! The content: the `TX`/`FT`/`ST` results, a line each, as one `text/plain; charset=utf-8`
//! attachment (Chinese text is UTF-8 whatever the message's charset was), and each `ED`
//! result as an attachment of its own (`application/pdf` for `AP^PDF^Base64`), inline in the
//! DocumentReference (HL7-40's Binary is not written apart). `TXA-17` (completion) →
//! `docStatus` (`AU`/`LA` final, else preliminary), `TXA-19` (availability) → `status`
//! (`AV` current, `OB` superseded, `CA` entered-in-error), `TXA-2` → `type` (table 0270),
//! `TXA-4` → `date`, `TXA-9` (else `TXA-5`) → `author`, `TXA-10` → `authenticator`,
//! `TXA-13` → `relatesTo` appends, `TXA-18` → `securityLabel` (v3 Confidentiality).

use fhir_sdk::Base64Binary;
use fhir_sdk::r4b::codes::{CompositionStatus, DocumentReferenceStatus, DocumentRelationshipType};
use fhir_sdk::r4b::resources::{
    DocumentReference, DocumentReferenceContent, DocumentReferenceContext,
    DocumentReferenceRelatesTo, Resource,
};
use fhir_sdk::r4b::types::Attachment;
use huizhen_hl7::mapping::Coded;
use huizhen_hl7::mapping::readers::{
    clean, doctor_of, entity_of, identifier_of, one, summary_of, text_of, timestamp_of,
};
use huizhen_hl7::{Message, Value};

use super::bundle::{Tx, Write};
use super::model::{
    built, coded, concept_of, doctor, identifier, instant, logical_reference, reference,
};
use super::patient::{message_identifier, referenced_patient};
use super::results::{ed_attachment, media_type};
use super::{ConvertError, Ctx};

const CONFIDENTIALITY: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";

pub(super) fn mdm(
    message: &Message,
    ctx: &Ctx<'_>,
    tx: &mut Tx,
    warnings: &mut Vec<String>,
) -> Result<(), ConvertError> {
    let txa = message.segment("TXA", 1).ok_or_else(|| {
        ConvertError::at("TXA", "missing: an MDM message needs the document segment")
    })?;
    let id = match one(txa, 12, entity_of) {
        Some(e) => identifier(ctx, &e.id, e.namespace.as_deref(), None)?,
        None => {
            warnings
                .push("TXA-12: no unique document number; the document is keyed on MSH-10".into());
            message_identifier(ctx, "document")?
        }
    };
    let content = content(message)?;
    let status = one(txa, 19, text_of)
        .and_then(|s| {
            ctx.maps
                .value("TXA-19", &s)
                .and_then(|c| c.parse().ok())
                .or_else(|| availability(&s))
        })
        .unwrap_or(DocumentReferenceStatus::Current);
    let mut d = built(
        DocumentReference::builder()
            .status(status)
            .content(Vec::new())
            .build(),
        "DocumentReference",
    )?;
    d.master_identifier = Some(id.clone());
    d.identifier.push(Some(id.clone()));
    d.doc_status = one(txa, 17, text_of).and_then(|s| {
        ctx.maps
            .value("TXA-17", &s)
            .and_then(|c| c.parse().ok())
            .or_else(|| completion(&s))
    });
    if let Some(t) = one(txa, 2, text_of) {
        let c = Coded {
            code: Some(t),
            system: Some("HL70270".into()),
            ..Coded::default()
        };
        d.r#type = coded(ctx.maps, "TXA-2", &c)?;
    }
    if let Some(pid) = message.segment("PID", 1) {
        let mut w = Vec::new();
        let summary = summary_of(pid, &mut w);
        warnings.extend(w);
        if let Some(p) = referenced_patient(tx, ctx, &summary)? {
            d.subject = Some(reference(&p, None)?);
        }
    }
    d.date = one(txa, 4, timestamp_of)
        .or_else(|| one(txa, 6, timestamp_of))
        .and_then(|t| instant(ctx, &t));
    for n in [9, 5] {
        if let Some(doc) = one(txa, n, doctor_of)
            && let Some(r) = doctor(ctx, &doc)?
        {
            d.author.push(Some(r));
            break;
        }
    }
    if let Some(doc) = one(txa, 10, doctor_of) {
        d.authenticator = doctor(ctx, &doc)?;
    }
    if let Some(parent) = one(txa, 13, entity_of) {
        let target = logical_reference(
            "DocumentReference",
            Some(identifier(
                ctx,
                &parent.id,
                parent.namespace.as_deref(),
                None,
            )?),
            None,
        )?;
        d.relates_to.push(Some(built(
            DocumentReferenceRelatesTo::builder()
                .code(DocumentRelationshipType::Appends)
                .target(target)
                .build(),
            "DocumentReference.relatesTo",
        )?));
    }
    if let Some(c) = one(txa, 18, text_of) {
        let code = match c.to_ascii_uppercase().as_str() {
            "V" => Some("V"),
            "R" => Some("R"),
            "U" => Some("N"),
            _ => None,
        };
        if let Some(code) = code {
            d.security_label
                .push(Some(concept_of(CONFIDENTIALITY, code, None)?));
        }
    }
    if let Some(visit) = message
        .segment("PV1", 1)
        .and_then(|pv1| one(pv1, 19, identifier_of))
    {
        let enc = logical_reference(
            "Encounter",
            Some(identifier(
                ctx,
                &visit.id,
                visit.assigning_authority.as_deref(),
                Some("VN"),
            )?),
            None,
        )?;
        let mut c = built(
            DocumentReferenceContext::builder().build(),
            "DocumentReference.context",
        )?;
        c.encounter.push(Some(enc));
        d.context = Some(c);
    }
    for a in content {
        d.content.push(Some(built(
            DocumentReferenceContent::builder().attachment(a).build(),
            "DocumentReference.content",
        )?));
    }
    tx.add(
        "DocumentReference",
        &id,
        Write::Update,
        Resource::DocumentReference(d),
    )?;
    Ok(())
}

/// The document's content from its `OBX` segments.
fn content(message: &Message) -> Result<Vec<Attachment>, ConvertError> {
    let mut lines = Vec::new();
    let mut out = Vec::new();
    for (i, obx) in message.segments_named("OBX").enumerate() {
        let path = format!("OBX[{}]", i + 1);
        let kind = one(obx, 2, text_of).map(|t| t.to_ascii_uppercase());
        let Some(field) = obx.field(5) else { continue };
        for rep in field.repetitions() {
            let Value::Data(rep) = rep.value() else {
                continue;
            };
            match kind.as_deref() {
                Some("ED") => out.push(ed(rep, &path)?),
                _ => lines.push(rep.text().into_owned()),
            }
        }
    }
    if !lines.is_empty() {
        let mut a = built(Attachment::builder().build(), "Attachment")?;
        a.content_type = Some("text/plain; charset=utf-8".into());
        a.data = Some(Base64Binary(lines.join("\n").into_bytes()));
        out.insert(0, a);
    }
    if out.is_empty() {
        return Err(ConvertError::at(
            "OBX",
            "no document content: an MDM^T02 carries its document in OBX-5",
        ));
    }
    Ok(out)
}

/// An `ED` repetition (source, type, subtype, encoding, data) as an attachment.
fn ed(rep: huizhen_hl7::Element<'_>, path: &str) -> Result<Attachment, ConvertError> {
    let part = |c: usize| clean(rep.component(c)).unwrap_or_default();
    let text = format!(
        "{}^{}^{}^{}^{}",
        part(1),
        part(2),
        part(3),
        part(4),
        part(5)
    );
    let mut a = ed_attachment(&text, path)?;
    if a.content_type.is_none() {
        a.content_type = Some(media_type(None, None));
    }
    Ok(a)
}

/// HL7 table 0271 (TXA-17) → DocumentReference.docStatus.
fn completion(code: &str) -> Option<CompositionStatus> {
    Some(match code.trim().to_ascii_uppercase().as_str() {
        "AU" | "LA" => CompositionStatus::Final,
        "DI" | "DO" | "IP" | "IN" | "PA" => CompositionStatus::Preliminary,
        _ => return None,
    })
}

/// HL7 table 0275 (TXA-19) → DocumentReference.status.
fn availability(code: &str) -> Option<DocumentReferenceStatus> {
    Some(match code.trim().to_ascii_uppercase().as_str() {
        "AV" | "UN" => DocumentReferenceStatus::Current,
        "OB" => DocumentReferenceStatus::Superseded,
        "CA" => DocumentReferenceStatus::EnteredInError,
        _ => return None,
    })
}
