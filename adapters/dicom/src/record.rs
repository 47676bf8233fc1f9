//! The attributes of a received instance that the study index and the pipeline message carry,
//! decoded with the object's Specific Character Set (DCM-04), or the calling AE's default
//! (flagged) when the object has none.

use serde::Serialize;

use crate::charset::{Charset, Decoded};
use crate::dataset::{Element, Tag, tag};

pub const SPECIFIC_CHARACTER_SET: Tag = tag(0x0008, 0x0005);
pub const SOP_CLASS_UID: Tag = tag(0x0008, 0x0016);
pub const SOP_INSTANCE_UID: Tag = tag(0x0008, 0x0018);
pub const STUDY_DATE: Tag = tag(0x0008, 0x0020);
pub const STUDY_TIME: Tag = tag(0x0008, 0x0030);
pub const ACCESSION_NUMBER: Tag = tag(0x0008, 0x0050);
pub const QUERY_RETRIEVE_LEVEL: Tag = tag(0x0008, 0x0052);
pub const RETRIEVE_AE_TITLE: Tag = tag(0x0008, 0x0054);
pub const MODALITY: Tag = tag(0x0008, 0x0060);
pub const MODALITIES_IN_STUDY: Tag = tag(0x0008, 0x0061);
pub const STUDY_DESCRIPTION: Tag = tag(0x0008, 0x1030);
pub const SERIES_DESCRIPTION: Tag = tag(0x0008, 0x103E);
pub const PATIENT_NAME: Tag = tag(0x0010, 0x0010);
pub const PATIENT_ID: Tag = tag(0x0010, 0x0020);
pub const PATIENT_BIRTH_DATE: Tag = tag(0x0010, 0x0030);
pub const PATIENT_SEX: Tag = tag(0x0010, 0x0040);
pub const STUDY_INSTANCE_UID: Tag = tag(0x0020, 0x000D);
pub const SERIES_INSTANCE_UID: Tag = tag(0x0020, 0x000E);
pub const STUDY_ID: Tag = tag(0x0020, 0x0010);
pub const SERIES_NUMBER: Tag = tag(0x0020, 0x0011);
pub const INSTANCE_NUMBER: Tag = tag(0x0020, 0x0013);
pub const NUMBER_OF_PATIENT_RELATED_STUDIES: Tag = tag(0x0020, 0x1200);
pub const NUMBER_OF_STUDY_RELATED_SERIES: Tag = tag(0x0020, 0x1206);
pub const NUMBER_OF_STUDY_RELATED_INSTANCES: Tag = tag(0x0020, 0x1208);
pub const NUMBER_OF_SERIES_RELATED_INSTANCES: Tag = tag(0x0020, 0x1209);

/// What the index reads of a stored instance (all in groups 0008–0020: reading stops there).
pub const INDEX_TAGS: &[Tag] = &[
    SPECIFIC_CHARACTER_SET,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    STUDY_DATE,
    STUDY_TIME,
    ACCESSION_NUMBER,
    MODALITY,
    STUDY_DESCRIPTION,
    SERIES_DESCRIPTION,
    PATIENT_NAME,
    PATIENT_ID,
    PATIENT_BIRTH_DATE,
    PATIENT_SEX,
    STUDY_INSTANCE_UID,
    SERIES_INSTANCE_UID,
    STUDY_ID,
    SERIES_NUMBER,
    INSTANCE_NUMBER,
];

/// Where the index stops reading: past the last tag it needs.
pub const INDEX_UNTIL: Tag = tag(0x0020, 0x0014);

/// Top-level elements with the charset to decode their text.
pub struct Attrs<'a> {
    elements: &'a [Element],
    pub charset: Charset,
    replaced: std::cell::Cell<bool>,
}

impl<'a> Attrs<'a> {
    /// Picks the charset: the object's (0008,0005), else `default` (flagged as assumed), else
    /// the default repertoire. An unknown (0008,0005) is an error naming it.
    pub fn new(elements: &'a [Element], default: Option<&Charset>) -> Result<Attrs<'a>, String> {
        let declared = elements.iter().find(|e| e.tag == SPECIFIC_CHARACTER_SET);
        let charset = match declared {
            Some(e) if !e.value.iter().all(|b| *b == b' ' || *b == 0) => {
                let text = String::from_utf8_lossy(&e.value);
                let values: Vec<String> = text.split('\\').map(str::to_owned).collect();
                Charset::from_values(&values)?
            }
            _ => default.cloned().unwrap_or_else(Charset::ascii),
        };
        Ok(Attrs {
            elements,
            charset,
            replaced: std::cell::Cell::new(false),
        })
    }

    pub fn raw(&self, t: Tag) -> Option<&'a [u8]> {
        self.elements
            .iter()
            .find(|e| e.tag == t)
            .map(|e| e.value.as_slice())
    }

    /// A text value (SH, LO, PN, …) decoded with the charset; `None` when absent or empty.
    pub fn text(&self, t: Tag) -> Option<String> {
        let Decoded { text, replaced } = self.charset.decode(self.raw(t)?);
        self.replaced.set(self.replaced.get() | replaced);
        let text = text.trim().to_owned();
        (!text.is_empty()).then_some(text)
    }

    /// A value of the default repertoire (CS, DA, TM, UI, IS, AE).
    pub fn ascii(&self, t: Tag) -> Option<String> {
        let Decoded { text, replaced } = Charset::ascii().decode(self.raw(t)?);
        self.replaced.set(self.replaced.get() | replaced);
        let text = text.trim_matches(['\0', ' ']).to_owned();
        (!text.is_empty()).then_some(text)
    }

    /// Whether a value decoded so far had bytes its charset could not decode.
    pub fn replaced(&self) -> bool {
        self.replaced.get()
    }

    /// The elements (for queries that echo every key asked).
    pub fn elements(&self) -> &'a [Element] {
        self.elements
    }
}

/// What the index and the pipeline message carry of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceRecord {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_uid: String,
    pub series_uid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient_birth_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient_sex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accession: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub study_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub study_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub study_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub study_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modality: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_description: Option<String>,
    /// (0008,0005) as given, or the default used.
    pub charset: String,
    /// (0008,0005) was missing and the calling AE's default charset was used.
    pub charset_assumed: bool,
    /// Some text bytes could not be decoded (U+FFFD in their place).
    pub charset_replaced: bool,
}

/// Reads the record. The UIDs must be present (and well formed: they name files); the
/// command's SOP instance UID must match the data set's.
pub fn instance_record(
    elements: &[Element],
    default: Option<&Charset>,
) -> Result<InstanceRecord, String> {
    let a = Attrs::new(elements, default)?;
    let uid = |t: Tag, what: &str| -> Result<String, String> {
        let v = a
            .ascii(t)
            .ok_or_else(|| format!("{what} ({:04X},{:04X}) is missing", t >> 16, t & 0xFFFF))?;
        if !crate::uids::is_valid(&v) {
            return Err(format!(
                "{what} ({:04X},{:04X}) {v:?} is not a valid UID",
                t >> 16,
                t & 0xFFFF
            ));
        }
        Ok(v)
    };
    let record = InstanceRecord {
        sop_class_uid: a.ascii(SOP_CLASS_UID).unwrap_or_default(),
        sop_instance_uid: uid(SOP_INSTANCE_UID, "SOP Instance UID")?,
        study_uid: uid(STUDY_INSTANCE_UID, "Study Instance UID")?,
        series_uid: uid(SERIES_INSTANCE_UID, "Series Instance UID")?,
        instance_number: a.ascii(INSTANCE_NUMBER),
        patient_id: a.text(PATIENT_ID),
        patient_name: a.text(PATIENT_NAME),
        patient_birth_date: a.ascii(PATIENT_BIRTH_DATE),
        patient_sex: a.ascii(PATIENT_SEX),
        accession: a.text(ACCESSION_NUMBER),
        study_date: a.ascii(STUDY_DATE),
        study_time: a.ascii(STUDY_TIME),
        study_description: a.text(STUDY_DESCRIPTION),
        study_id: a.text(STUDY_ID),
        modality: a.ascii(MODALITY),
        series_number: a.ascii(SERIES_NUMBER),
        series_description: a.text(SERIES_DESCRIPTION),
        charset: a.charset.name.clone(),
        charset_assumed: false,
        charset_replaced: false,
    };
    let non_ascii = [
        &record.patient_name,
        &record.patient_id,
        &record.accession,
        &record.study_description,
        &record.series_description,
        &record.study_id,
    ]
    .iter()
    .any(|v| v.as_deref().is_some_and(|s| !s.is_ascii()));
    Ok(InstanceRecord {
        // Only worth a flag when a default was actually needed to read something.
        charset_assumed: a.charset.assumed && non_ascii,
        charset_replaced: a.replaced(),
        ..record
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(t: Tag, v: &[u8]) -> Element {
        Element {
            tag: t,
            vr: None,
            value: v.to_vec(),
        }
    }

    fn base() -> Vec<Element> {
        vec![
            el(SOP_INSTANCE_UID, b"1.2.3.4\0"),
            el(STUDY_INSTANCE_UID, b"1.2.3\0"),
            el(SERIES_INSTANCE_UID, b"1.2.3.1\0"),
            el(MODALITY, b"CT"),
        ]
    }

    #[test]
    fn gb18030_name_is_decoded_and_nothing_is_flagged() {
        let mut e = base();
        e.push(el(SPECIFIC_CHARACTER_SET, b"GB18030 "));
        e.push(el(PATIENT_NAME, &encoding_rs::GB18030.encode("王^小东").0));
        let r = instance_record(&e, None).unwrap();
        assert_eq!(r.patient_name.as_deref(), Some("王^小东"));
        assert_eq!(r.charset, "GB18030");
        assert!(!r.charset_assumed && !r.charset_replaced);
        assert_eq!(r.modality.as_deref(), Some("CT"));
    }

    #[test]
    fn missing_charset_uses_the_default_and_says_so() {
        let mut e = base();
        e.push(el(PATIENT_NAME, &encoding_rs::GB18030.encode("张^三").0));
        let gb = Charset::default_named("GB18030").unwrap();
        let r = instance_record(&e, Some(&gb)).unwrap();
        assert_eq!(r.patient_name.as_deref(), Some("张^三"));
        assert!(r.charset_assumed);
        // Without a default: the default repertoire, the bytes replaced and flagged.
        let r = instance_record(&e, None).unwrap();
        assert!(r.charset_replaced && !r.charset_assumed);
        // ASCII-only objects are not flagged for the missing charset.
        let r = instance_record(&base(), Some(&gb)).unwrap();
        assert!(!r.charset_assumed);
    }

    #[test]
    fn uids_are_required_and_checked() {
        let mut e = base();
        e[1] = el(STUDY_INSTANCE_UID, b"../../x");
        let err = instance_record(&e, None).unwrap_err();
        assert!(err.contains("Study Instance UID (0020,000D)"), "{err}");
        let e: Vec<Element> = base().into_iter().skip(1).collect();
        assert!(
            instance_record(&e, None)
                .unwrap_err()
                .contains("SOP Instance UID")
        );
        let mut e = base();
        e.push(el(SPECIFIC_CHARACTER_SET, b"KOI8-R"));
        assert!(instance_record(&e, None).unwrap_err().contains("KOI8-R"));
    }
}
