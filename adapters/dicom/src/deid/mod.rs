//! De-identification (DCM-06): PS3.15 Annex E, the Basic Application Level Confidentiality
//! Profile with options, for secondary use (case library, teaching exports) — never for the
//! treating expert, who reads the study as received.
//!
//! * [`table`]: Table E.1-1 (the rows and the option columns implemented).
//! * [`Deidentifier`]: applies it to a data set, recursively into sequences: every listed
//!   attribute gets its action, private attributes (odd groups) are removed, curves (50xx) and
//!   overlay data and comments (60xx,3000 / 60xx,4000) are removed; then (0012,0062) Patient
//!   Identity Removed = `YES`, (0012,0063) De-identification Method (one value per profile and
//!   option) and (0012,0064) its code
//!   sequence (CID 7050: 113100 and one code per option) and (0028,0303) Longitudinal Temporal
//!   Information Modified are set.
//! * UIDs (`U`) are replaced by `2.25.<128-bit integer>` from HMAC-SHA-256(secret, project key
//!   and the UID): the same UID gives the same replacement within a project key, so studies,
//!   series, references (KOS, SR, Referenced Image Sequence) stay consistent, and nobody without
//!   the secret can map back or link two projects.
//! * Patient ID and Patient's Name (`Z`) become a pseudonym of the same kind (`ANON-<hex>`), so
//!   a patient's studies stay together in a project; the secret is the mapping table.
//! * Dates under Retain Longitudinal Temporal Information with Modified Dates (`C`) are shifted
//!   back by a whole number of days (1 … 3650) from the same HMAC of the patient id, the same
//!   for all of a patient's objects in the project; times are kept.
//! * `C` on text (Clean Descriptors) keeps the text with every identifying value of the object
//!   (name components, ids, accession, birth date, institution, physicians) replaced by `***`;
//!   `C` on sequences (Clean Structured Content) keeps them, their items de-identified.
//! * Objects with Burned In Annotation (0028,0301) = `YES`, or from modalities that usually burn
//!   text into pixels (US, SC, XC, ES, OT) without (0028,0301) = `NO`, are refused: pixel
//!   cleaning is not implemented, so such objects are excluded rather than exported.
//!
//! Options not implemented, refused by the step's configuration: Retain Safe Private (no list of
//! safe private attributes is kept here), Clean Graphics, Clean Pixel Data, Clean Recognizable
//! Visual Features.

pub mod step;
pub mod table;

use std::collections::BTreeSet;

use dicom_core::value::{DataSetSequence, Value};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_object::{FileDicomObject, InMemDicomObject};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use table::{Act, Opt, TABLE};

type Elem = dicom_object::mem::InMemElement;

/// What de-identifies objects of one project.
#[derive(Clone)]
pub struct Deidentifier {
    project: String,
    secret: Vec<u8>,
    options: BTreeSet<Opt>,
}

impl std::fmt::Debug for Deidentifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deidentifier")
            .field("project", &self.project)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The CID 7050 code of the basic profile and of each option.
pub fn method_code(o: Option<Opt>) -> (&'static str, &'static str) {
    match o {
        None => ("113100", "Basic Application Confidentiality Profile"),
        Some(Opt::CleanStructuredContent) => ("113104", "Clean Structured Content Option"),
        Some(Opt::CleanDescriptors) => ("113105", "Clean Descriptors Option"),
        Some(Opt::RetainLongitudinalFullDates) => (
            "113106",
            "Retain Longitudinal Temporal Information Full Dates Option",
        ),
        Some(Opt::RetainLongitudinalModifiedDates) => (
            "113107",
            "Retain Longitudinal Temporal Information Modified Dates Option",
        ),
        Some(Opt::RetainPatientCharacteristics) => {
            ("113108", "Retain Patient Characteristics Option")
        }
        Some(Opt::RetainDeviceIdentity) => ("113109", "Retain Device Identity Option"),
        Some(Opt::RetainUids) => ("113110", "Retain UIDs Option"),
        Some(Opt::RetainInstitutionIdentity) => ("113112", "Retain Institution Identity Option"),
    }
}

/// Modalities whose pixels often carry burned-in text.
const BURN_PRONE: &[&str] = &["US", "SC", "XC", "ES", "OT"];

/// What is identifying in one object (for Clean Descriptors), and the patient key.
struct Known {
    values: Vec<String>,
    day_shift: i64,
    pseudonym: String,
}

impl Deidentifier {
    pub fn new(
        project: &str,
        secret: &[u8],
        options: impl IntoIterator<Item = Opt>,
    ) -> Result<Deidentifier, String> {
        if project.trim().is_empty() {
            return Err("the project key is empty".into());
        }
        if secret.len() < 16 {
            return Err("the secret must be at least 16 bytes".into());
        }
        let options: BTreeSet<Opt> = options.into_iter().collect();
        if options.contains(&Opt::RetainLongitudinalFullDates)
            && options.contains(&Opt::RetainLongitudinalModifiedDates)
        {
            return Err(
                "retain_longitudinal_full_dates and retain_longitudinal_modified_dates exclude each other"
                    .into(),
            );
        }
        Ok(Deidentifier {
            project: project.to_owned(),
            secret: secret.to_vec(),
            options,
        })
    }

    fn mac(&self, what: &str, value: &str) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("any key length");
        for part in [self.project.as_str(), what, value] {
            m.update(&(part.len() as u64).to_be_bytes());
            m.update(part.as_bytes());
        }
        m.finalize().into_bytes().into()
    }

    /// The replacement of a UID: the same within this project key, `2.25.` and 128 bits.
    pub fn uid(&self, uid: &str) -> String {
        let uid = uid.trim_end_matches(['\0', ' ']);
        let h = self.mac("uid", uid);
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        format!("2.25.{}", u128::from_be_bytes(b))
    }

    /// The pseudonym of a patient id within this project key.
    pub fn pseudonym(&self, patient_id: &str) -> String {
        let h = self.mac("patient", patient_id.trim());
        format!("ANON-{}", hex::encode(&h[..8]).to_uppercase())
    }

    fn day_shift(&self, patient_id: &str) -> i64 {
        let h = self.mac("dates", patient_id.trim());
        1 + (u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % 3650) as i64
    }

    /// The options chosen.
    pub fn options(&self) -> &BTreeSet<Opt> {
        &self.options
    }

    /// De-identifies an object read from a Part 10 file (its file meta group follows the SOP
    /// Instance UID). `Err` when the object must not be exported (burned-in annotation).
    pub fn apply_file(
        &self,
        file: FileDicomObject<InMemDicomObject>,
    ) -> Result<FileDicomObject<InMemDicomObject>, String> {
        let mut meta = file.meta().clone();
        let obj = file.into_inner();
        let out = self.apply(obj)?;
        let sop = out
            .element(Tag(0x0008, 0x0018))
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
            .unwrap_or_default();
        meta.media_storage_sop_instance_uid = sop;
        meta.source_application_entity_title = None;
        meta.sending_application_entity_title = None;
        meta.receiving_application_entity_title = None;
        meta.private_information_creator_uid = None;
        meta.private_information = None;
        meta.update_information_group_length();
        Ok(out.with_exact_meta(meta))
    }

    /// De-identifies a data set.
    pub fn apply(&self, obj: InMemDicomObject) -> Result<InMemDicomObject, String> {
        let text = |t: Tag| {
            obj.element(t)
                .ok()
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let burned = text(Tag(0x0028, 0x0301)).to_uppercase();
        let modality = text(Tag(0x0008, 0x0060)).to_uppercase();
        if burned == "YES" {
            return Err("Burned In Annotation (0028,0301) is YES and pixel data cleaning is not implemented: the object is excluded".into());
        }
        if BURN_PRONE.contains(&modality.as_str()) && burned != "NO" {
            return Err(format!(
                "modality {modality} may carry burned-in text and (0028,0301) Burned In Annotation is not NO; pixel data cleaning is not implemented: the object is excluded"
            ));
        }
        let patient_id = text(Tag(0x0010, 0x0020));
        let mut values = Vec::new();
        for t in [
            Tag(0x0010, 0x0010),
            Tag(0x0010, 0x0020),
            Tag(0x0010, 0x1000),
            Tag(0x0010, 0x1001),
            Tag(0x0010, 0x0030),
            Tag(0x0008, 0x0050),
            Tag(0x0008, 0x0080),
            Tag(0x0008, 0x0090),
            Tag(0x0008, 0x1050),
            Tag(0x0008, 0x1060),
            Tag(0x0008, 0x1070),
            Tag(0x0010, 0x1040),
            Tag(0x0010, 0x2154),
            Tag(0x0020, 0x0010),
        ] {
            let v = text(t);
            for part in v.split(['^', '=', '\\']) {
                let part = part.trim();
                if part.chars().count() >= 2 && !values.iter().any(|x| x == part) {
                    values.push(part.to_owned());
                }
            }
        }
        // Longest first, so a full name is replaced before its parts.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        let known = Known {
            values,
            day_shift: self.day_shift(&patient_id),
            pseudonym: self.pseudonym(&patient_id),
        };
        let mut out = self.dataset(obj, &known);
        let modified = if self.options.contains(&Opt::RetainLongitudinalFullDates) {
            "UNMODIFIED"
        } else if self.options.contains(&Opt::RetainLongitudinalModifiedDates) {
            "MODIFIED"
        } else {
            "REMOVED"
        };
        out.put(DataElement::new(
            Tag(0x0028, 0x0303),
            VR::CS,
            PrimitiveValue::from(modified),
        ));
        out.put(DataElement::new(
            Tag(0x0012, 0x0062),
            VR::CS,
            PrimitiveValue::from("YES"),
        ));
        // One LO value (≤ 64 characters) per profile and option: the CID 7050 meanings.
        let mut method = vec![method_code(None).1.to_owned()];
        let mut codes = vec![code_item(None)];
        for o in &self.options {
            method.push(method_code(Some(*o)).1.to_owned());
            codes.push(code_item(Some(*o)));
        }
        out.put(DataElement::new(
            Tag(0x0012, 0x0063),
            VR::LO,
            PrimitiveValue::Strs(method.into()),
        ));
        out.put(DataElement::new(
            Tag(0x0012, 0x0064),
            VR::SQ,
            DataSetSequence::from(codes),
        ));
        Ok(out)
    }

    fn dataset(&self, obj: InMemDicomObject, known: &Known) -> InMemDicomObject {
        let mut out = Vec::new();
        for e in obj {
            if let Some(e) = self.element(e, known) {
                out.push(e);
            }
        }
        InMemDicomObject::from_element_iter(out)
    }

    fn element(&self, e: Elem, known: &Known) -> Option<Elem> {
        let tag = e.header().tag;
        let (g, el) = (tag.group(), tag.element());
        // Private attributes (odd groups, including private creators).
        if g % 2 == 1 {
            return None;
        }
        // Curves and overlay data / comments (repeating groups).
        if (0x5000..=0x50FF).contains(&g) && g % 2 == 0 {
            return None;
        }
        if (0x6000..=0x60FF).contains(&g) && (el == 0x3000 || el == 0x4000) {
            return None;
        }
        let act = match TABLE.iter().find(|r| r.0 == g && r.1 == el) {
            Some(row) => table::action(row, &self.options.iter().copied().collect::<Vec<_>>()),
            None => Act::K,
        };
        let vr = e.header().vr;
        match act {
            Act::X => None,
            // The patient's id and name: the project's pseudonym (a dummy value, E.1.1 Z).
            Act::Z if tag == Tag(0x0010, 0x0010) || tag == Tag(0x0010, 0x0020) => Some(
                DataElement::new(tag, vr, PrimitiveValue::from(known.pseudonym.as_str())),
            ),
            Act::Z | Act::XZ => Some(empty(tag, vr)),
            Act::K | Act::XZU => Some(self.recurse(e, known)),
            Act::U => Some(self.uid_element(e)),
            Act::D | Act::ZD | Act::XD | Act::XZD => Some(self.dummy(e, known)),
            Act::C => Some(self.clean(e, known)),
        }
    }

    fn recurse(&self, e: Elem, known: &Known) -> Elem {
        let (header, value) = e.into_parts();
        match value {
            Value::Sequence(seq) => {
                let items: Vec<InMemDicomObject> = seq
                    .into_items()
                    .into_iter()
                    .map(|item| self.dataset(item, known))
                    .collect();
                DataElement::new(header.tag, VR::SQ, DataSetSequence::from(items))
            }
            other => DataElement::new(header.tag, header.vr, other),
        }
    }

    fn uid_element(&self, e: Elem) -> Elem {
        let tag = e.header().tag;
        let vr = e.header().vr;
        if vr == VR::SQ {
            return e;
        }
        let uids: Vec<String> = e
            .to_multi_str()
            .map(|v| v.iter().map(|u| self.uid(u)).collect())
            .unwrap_or_default();
        DataElement::new(tag, VR::UI, PrimitiveValue::Strs(uids.into()))
    }

    fn dummy(&self, e: Elem, known: &Known) -> Elem {
        let tag = e.header().tag;
        let vr = e.header().vr;
        if vr == VR::SQ {
            // A sequence of dummy items: its items de-identified.
            return self.recurse(e, known);
        }
        let v = match vr {
            VR::PN => PrimitiveValue::from("ANONYMOUS"),
            VR::DA => PrimitiveValue::from("19000101"),
            VR::TM => PrimitiveValue::from("000000"),
            VR::DT => PrimitiveValue::from("19000101000000"),
            VR::AS => PrimitiveValue::from("000Y"),
            VR::UI => return self.uid_element(e),
            VR::US | VR::SS | VR::UL | VR::SL | VR::FL | VR::FD | VR::IS | VR::DS => {
                PrimitiveValue::from("0")
            }
            VR::OB | VR::OW | VR::UN | VR::OF | VR::OD | VR::OL | VR::OV => {
                return empty(tag, vr);
            }
            _ => PrimitiveValue::from("ANONYMIZED"),
        };
        match vr {
            VR::US => DataElement::new(tag, vr, PrimitiveValue::from(0_u16)),
            VR::SS => DataElement::new(tag, vr, PrimitiveValue::from(0_i16)),
            VR::UL => DataElement::new(tag, vr, PrimitiveValue::from(0_u32)),
            VR::SL => DataElement::new(tag, vr, PrimitiveValue::from(0_i32)),
            VR::FL => DataElement::new(tag, vr, PrimitiveValue::from(0_f32)),
            VR::FD => DataElement::new(tag, vr, PrimitiveValue::from(0_f64)),
            _ => DataElement::new(tag, vr, v),
        }
    }

    fn clean(&self, e: Elem, known: &Known) -> Elem {
        let tag = e.header().tag;
        let vr = e.header().vr;
        match vr {
            VR::SQ => self.recurse(e, known),
            VR::DA | VR::DT => {
                let vals: Vec<String> = e
                    .to_multi_str()
                    .map(|v| v.iter().map(|d| shift_date(d, known.day_shift)).collect())
                    .unwrap_or_default();
                DataElement::new(tag, vr, PrimitiveValue::Strs(vals.into()))
            }
            // Whole days are shifted: times of day stay, and the timezone offset when it is
            // one (`+0800`); anything else there is emptied.
            VR::TM => e,
            _ if tag == Tag(0x0008, 0x0201) => {
                let v = e.to_str().map(|s| s.trim().to_owned()).unwrap_or_default();
                let b = v.as_bytes();
                let offset = b.len() == 5
                    && (b[0] == b'+' || b[0] == b'-')
                    && b[1..].iter().all(u8::is_ascii_digit);
                if offset { e } else { empty(tag, vr) }
            }
            VR::LO | VR::SH | VR::ST | VR::LT | VR::UT | VR::UC | VR::PN | VR::CS => {
                let s = e.to_str().map(|s| s.into_owned()).unwrap_or_default();
                let mut cleaned = s;
                for v in &known.values {
                    cleaned = replace_ci(&cleaned, v, "***");
                }
                DataElement::new(tag, vr, PrimitiveValue::from(cleaned))
            }
            _ => self.dummy(e, known),
        }
    }
}

fn empty(tag: Tag, vr: VR) -> Elem {
    if vr == VR::SQ {
        DataElement::new(
            tag,
            VR::SQ,
            DataSetSequence::from(Vec::<InMemDicomObject>::new()),
        )
    } else {
        DataElement::new(tag, vr, PrimitiveValue::Empty)
    }
}

fn code_item(o: Option<Opt>) -> InMemDicomObject {
    let (code, meaning) = method_code(o);
    InMemDicomObject::from_element_iter([
        DataElement::new(Tag(0x0008, 0x0100), VR::SH, PrimitiveValue::from(code)),
        DataElement::new(Tag(0x0008, 0x0102), VR::SH, PrimitiveValue::from("DCM")),
        DataElement::new(Tag(0x0008, 0x0104), VR::LO, PrimitiveValue::from(meaning)),
    ])
}

/// Shifts a DA (`YYYYMMDD`) or the date of a DT back by `days`; what does not parse is emptied.
fn shift_date(v: &str, days: i64) -> String {
    let v = v.trim();
    if v.len() < 8 {
        return String::new();
    }
    let Ok(d) = chrono::NaiveDate::parse_from_str(&v[..8], "%Y%m%d") else {
        return String::new();
    };
    let shifted = d - chrono::Duration::days(days);
    format!("{}{}", shifted.format("%Y%m%d"), &v[8..])
}

/// Replaces every case-insensitive occurrence of `needle`.
fn replace_ci(hay: &str, needle: &str, with: &str) -> String {
    if needle.is_empty() {
        return hay.to_owned();
    }
    let lower_hay = hay.to_lowercase();
    let lower_needle = needle.to_lowercase();
    if lower_hay.len() != hay.len() {
        // Case folding changed byte lengths (rare scripts): exact replacement only.
        return hay.replace(needle, with);
    }
    let mut out = String::with_capacity(hay.len());
    let mut i = 0;
    while let Some(p) = lower_hay[i..].find(&lower_needle) {
        out.push_str(&hay[i..i + p]);
        out.push_str(with);
        i += p + needle.len();
    }
    out.push_str(&hay[i..]);
    out
}

#[cfg(test)]
mod tests;
