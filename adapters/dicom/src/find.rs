//! C-FIND SCP over the study index (PS3.4 C.4.1): Patient Root and Study Root, at the
//! PATIENT (patient root only), STUDY, SERIES and IMAGE levels.
//!
//! The identifier is read with [`crate::dataset`] and decoded with its own Specific Character
//! Set (DCM-04); answers are written with dicom-object in the context's transfer syntax and
//! declare `ISO_IR 192` (UTF-8), so Chinese names come back intact. Matching follows C.2.2.2:
//! universal (empty key), single value, wildcard (`*`, `?`), UID lists (`\`), date and time
//! ranges (`20260101-20260131`, `-20260131`, `20260101-`); Person Names match case-insensitively
//! against the whole value or any of its component groups (`王*` finds `Wang^XiaoDong=王^小东`).
//! The exact keys on clear columns pre-select in SQL; every key is then checked here.
//!
//! A calling AE sees only the studies of the facilities its `accept` entry names for queries
//! (its own by default). More matches than `max_find_results` refuse the query (status A700
//! with a comment asking to narrow it) rather than answer a silently truncated list.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag as DTag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use dicom_object::InMemDicomObject;
use huizhen_core::store::Store;
use huizhen_core::store::dicom::{DicomInstance, DicomSeries, DicomStudy, StudyFilter};

use crate::charset::name_groups;
use crate::dataset::{self, Tag, Want, show};
use crate::dimse::status;
use crate::record::*;

/// The level of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Patient,
    Study,
    Series,
    Image,
}

impl Level {
    fn code(self) -> &'static str {
        match self {
            Level::Patient => "PATIENT",
            Level::Study => "STUDY",
            Level::Series => "SERIES",
            Level::Image => "IMAGE",
        }
    }
}

/// One key of the identifier: its VR and its matching value (`None`: return only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub tag: Tag,
    pub vr: VR,
    pub value: Option<String>,
}

/// A parsed C-FIND identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub level: Level,
    pub keys: Vec<Key>,
}

/// Why a query failed: the C-FIND-RSP status and its error comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: u16,
    pub comment: String,
}

fn fail(status: u16, comment: impl Into<String>) -> Failure {
    Failure {
        status,
        comment: comment.into(),
    }
}

/// The VR of a standard tag.
pub(crate) fn vr_of(t: Tag) -> Option<VR> {
    let entry = StandardDataDictionary.by_tag(DTag((t >> 16) as u16, (t & 0xFFFF) as u16))?;
    match entry.vr() {
        VirtualVr::Exact(vr) => Some(vr),
        _ => None,
    }
}

impl Query {
    /// Reads an identifier encoded in transfer syntax `ts`.
    pub fn parse(identifier: &[u8], ts: &str, patient_root: bool) -> Result<Query, Failure> {
        let (syntax, deflated) = dataset::Syntax::of(ts);
        if deflated {
            return Err(fail(
                status::FIND_UNABLE,
                "deflated identifiers are not read",
            ));
        }
        let elements = dataset::scan(
            identifier,
            syntax,
            Want {
                until: u32::MAX,
                tags: None,
                max_value: 64 * 1024,
            },
        )
        .map_err(|e| fail(status::IDENTIFIER_MISMATCH, format!("identifier: {e}")))?;
        let attrs =
            Attrs::new(&elements, None).map_err(|e| fail(status::IDENTIFIER_MISMATCH, e))?;
        let level = match attrs.ascii(QUERY_RETRIEVE_LEVEL).as_deref() {
            Some("PATIENT") if patient_root => Level::Patient,
            Some("STUDY") => Level::Study,
            Some("SERIES") => Level::Series,
            Some("IMAGE") => Level::Image,
            other => {
                return Err(fail(
                    status::IDENTIFIER_MISMATCH,
                    format!("Query/Retrieve Level {other:?} is not supported by this model"),
                ));
            }
        };
        let mut keys = Vec::new();
        for e in attrs.elements() {
            if matches!(e.tag, SPECIFIC_CHARACTER_SET | QUERY_RETRIEVE_LEVEL) || e.tag >> 16 == 0 {
                continue;
            }
            let vr = e.vr.and_then(VR::from_binary).or_else(|| vr_of(e.tag));
            let Some(vr) = vr else {
                continue;
            };
            let text = match vr {
                VR::PN | VR::LO | VR::SH | VR::LT | VR::ST | VR::UC | VR::UT => attrs.text(e.tag),
                _ => attrs.ascii(e.tag),
            };
            keys.push(Key {
                tag: e.tag,
                vr,
                value: text,
            });
        }
        if attrs.replaced() {
            return Err(fail(
                status::IDENTIFIER_MISMATCH,
                format!(
                    "the identifier has bytes its Specific Character Set ({:?}) cannot decode",
                    attrs.charset.name
                ),
            ));
        }
        Ok(Query { level, keys })
    }

    fn value(&self, t: Tag) -> Option<&str> {
        self.keys
            .iter()
            .find(|k| k.tag == t)
            .and_then(|k| k.value.as_deref())
    }

    /// A key holding one exact value (no wildcard, range or list).
    fn exact(&self, t: Tag) -> Option<String> {
        self.value(t)
            .filter(|v| !v.contains(['*', '?', '\\', '-']))
            .map(str::to_owned)
    }
}

/// `*` any run, `?` one character.
fn glob(pattern: &[char], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

fn glob_str(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob(&p, &t)
}

/// Whether `actual` matches the key `cond` of VR `vr` (C.2.2.2).
pub fn matches(cond: &str, vr: VR, actual: Option<&str>) -> bool {
    let Some(actual) = actual else {
        return false;
    };
    match vr {
        VR::UI => cond.split('\\').any(|u| u.trim() == actual),
        VR::DA | VR::TM | VR::DT => match cond.split_once('-') {
            None => actual == cond || (vr == VR::TM && actual.starts_with(cond)),
            Some((from, to)) => {
                // Times compare on their common precision (HHMM vs HHMMSS.ffff).
                let cut = |s: &str| -> String {
                    if vr == VR::TM {
                        actual.chars().take(s.len()).collect()
                    } else {
                        actual.to_owned()
                    }
                };
                (from.is_empty() || cut(from).as_str() >= from)
                    && (to.is_empty() || cut(to).as_str() <= to)
            }
        },
        VR::PN => {
            let c = cond.to_lowercase();
            let whole = actual.to_lowercase();
            let groups = name_groups(&whole);
            glob_str(&c, &whole) || groups.iter().any(|g| !g.is_empty() && glob_str(&c, g))
        }
        _ => {
            let values: Vec<&str> = actual.split('\\').collect();
            cond.split('\\')
                .any(|c| values.iter().any(|a| glob_str(c.trim(), a.trim())))
        }
    }
}

/// What the index knows, per level, to answer with and match against.
enum Row<'a> {
    Patient {
        study: &'a DicomStudy,
        studies: usize,
    },
    Study(&'a DicomStudy),
    Series(&'a DicomStudy, &'a DicomSeries),
    Image(&'a DicomStudy, &'a DicomSeries, &'a DicomInstance),
}

impl Row<'_> {
    fn study(&self) -> &DicomStudy {
        match self {
            Row::Patient { study, .. } | Row::Study(study) => study,
            Row::Series(s, _) | Row::Image(s, _, _) => s,
        }
    }

    fn value(&self, t: Tag) -> Option<String> {
        let st = self.study();
        match (t, self) {
            (PATIENT_NAME, _) => st.patient.name.clone(),
            (PATIENT_ID, _) => st.patient_id.clone(),
            (PATIENT_BIRTH_DATE, _) => st.patient.birth_date.clone(),
            (PATIENT_SEX, _) => st.patient.sex.clone(),
            (NUMBER_OF_PATIENT_RELATED_STUDIES, Row::Patient { studies, .. }) => {
                Some(studies.to_string())
            }
            (_, Row::Patient { .. }) => None,
            (STUDY_INSTANCE_UID, _) => Some(st.study_uid.clone()),
            (STUDY_DATE, _) => st.study_date.clone(),
            (STUDY_TIME, _) => st.study_time.clone(),
            (ACCESSION_NUMBER, _) => st.accession.clone(),
            (STUDY_ID, _) => st.study_id.clone(),
            (STUDY_DESCRIPTION, _) => st.description.clone(),
            (MODALITIES_IN_STUDY, _) => Some(st.modalities.join("\\")),
            (NUMBER_OF_STUDY_RELATED_SERIES, _) => Some(st.series_count.to_string()),
            (NUMBER_OF_STUDY_RELATED_INSTANCES, _) => Some(st.instance_count.to_string()),
            (SERIES_INSTANCE_UID, Row::Series(_, se) | Row::Image(_, se, _)) => {
                Some(se.series_uid.clone())
            }
            (MODALITY, Row::Series(_, se) | Row::Image(_, se, _)) => se.modality.clone(),
            (SERIES_NUMBER, Row::Series(_, se) | Row::Image(_, se, _)) => {
                se.series_number.map(|n| n.to_string())
            }
            (SERIES_DESCRIPTION, Row::Series(_, se) | Row::Image(_, se, _)) => {
                se.description.clone()
            }
            (NUMBER_OF_SERIES_RELATED_INSTANCES, Row::Series(_, se) | Row::Image(_, se, _)) => {
                Some(se.instance_count.to_string())
            }
            (SOP_INSTANCE_UID, Row::Image(_, _, i)) => Some(i.sop_instance_uid.clone()),
            (SOP_CLASS_UID, Row::Image(_, _, i)) => Some(i.sop_class_uid.clone()),
            (INSTANCE_NUMBER, Row::Image(_, _, i)) => i.instance_number.map(|n| n.to_string()),
            _ => None,
        }
    }

    /// Every key with a value matches (keys the index cannot answer match nothing but a
    /// universal key).
    fn matches(&self, q: &Query) -> bool {
        q.keys.iter().all(|k| match &k.value {
            None => true,
            Some(c) => matches(c, k.vr, self.value(k.tag).as_deref()),
        })
    }

    /// The answer: every key asked, with the index's value (empty when unknown).
    fn answer(&self, q: &Query, retrieve_ae: &str) -> Vec<(Tag, VR, String)> {
        let mut out = vec![
            (SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192".to_owned()),
            (QUERY_RETRIEVE_LEVEL, VR::CS, q.level.code().to_owned()),
            (RETRIEVE_AE_TITLE, VR::AE, retrieve_ae.to_owned()),
        ];
        for k in &q.keys {
            if k.tag == RETRIEVE_AE_TITLE {
                continue;
            }
            out.push((k.tag, k.vr, self.value(k.tag).unwrap_or_default()));
        }
        out.sort_by_key(|(t, _, _)| *t);
        out
    }
}

/// Whom a query answers and how much.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Facilities whose studies may be answered (`None`: all).
    pub facilities: Option<Vec<String>>,
    pub max_results: usize,
    /// This SCP's AE title, answered as Retrieve AE Title.
    pub retrieve_ae: String,
}

/// Rows read from the index for one query at most (then the query is too broad).
const MAX_CANDIDATES: i64 = 20_000;

/// Runs a query: the answers' attributes, in order.
pub async fn run(
    store: &Store,
    q: &Query,
    scope: &Scope,
) -> Result<Vec<Vec<(Tag, VR, String)>>, Failure> {
    let failed = |e: huizhen_core::store::StoreError| {
        tracing::error!(error = %e, "C-FIND: the index could not be read");
        fail(status::FIND_UNABLE, "the index could not be read")
    };
    let in_scope = |s: &DicomStudy| {
        scope
            .facilities
            .as_ref()
            .is_none_or(|f| f.contains(&s.facility))
    };
    let (date_from, date_to) = match q.value(STUDY_DATE) {
        Some(d) => match d.split_once('-') {
            Some((a, b)) => (
                (!a.is_empty()).then(|| a.to_owned()),
                (!b.is_empty()).then(|| b.to_owned()),
            ),
            None => (Some(d.to_owned()), Some(d.to_owned())),
        },
        None => (None, None),
    };
    let study_uids: Vec<String> = q
        .value(STUDY_INSTANCE_UID)
        .map(|v| v.split('\\').map(|u| u.trim().to_owned()).collect())
        .unwrap_or_default();
    let needs_study_uid = matches!(q.level, Level::Series | Level::Image);
    if needs_study_uid && study_uids.len() != 1 {
        return Err(fail(
            status::IDENTIFIER_MISMATCH,
            format!(
                "a {} level query needs one Study Instance UID {}",
                q.level.code(),
                show(STUDY_INSTANCE_UID)
            ),
        ));
    }
    let filter = StudyFilter {
        facilities: scope.facilities.clone(),
        study_uids,
        patient_id: q.exact(PATIENT_ID),
        accession: q.exact(ACCESSION_NUMBER),
        date_from,
        date_to,
        limit: MAX_CANDIDATES,
    };
    let studies = store.dicom_studies(&filter).await.map_err(failed)?;
    if studies.len() as i64 >= MAX_CANDIDATES {
        return Err(too_many(MAX_CANDIDATES as usize));
    }
    let mut out = Vec::new();
    let push = |row: Row<'_>, out: &mut Vec<_>| -> Result<(), Failure> {
        if row.matches(q) {
            if out.len() >= scope.max_results {
                return Err(too_many(scope.max_results));
            }
            out.push(row.answer(q, &scope.retrieve_ae));
        }
        Ok(())
    };
    match q.level {
        Level::Patient => {
            let mut seen: Vec<(&str, Option<&str>)> = Vec::new();
            for s in studies.iter().filter(|s| in_scope(s)) {
                let key = (s.facility.as_str(), s.patient_id.as_deref());
                if seen.contains(&key) {
                    continue;
                }
                seen.push(key);
                let n = studies
                    .iter()
                    .filter(|o| (o.facility.as_str(), o.patient_id.as_deref()) == key)
                    .count();
                push(
                    Row::Patient {
                        study: s,
                        studies: n,
                    },
                    &mut out,
                )?;
            }
        }
        Level::Study => {
            for s in studies.iter().filter(|s| in_scope(s)) {
                push(Row::Study(s), &mut out)?;
            }
        }
        Level::Series | Level::Image => {
            for st in studies.iter().filter(|s| in_scope(s)) {
                let series = store.dicom_series(&st.study_uid).await.map_err(failed)?;
                for se in &series {
                    if q.level == Level::Series {
                        push(Row::Series(st, se), &mut out)?;
                        continue;
                    }
                    if !Row::Series(st, se).matches(&Query {
                        level: Level::Series,
                        keys: q
                            .keys
                            .iter()
                            .filter(|k| {
                                !matches!(k.tag, SOP_INSTANCE_UID | SOP_CLASS_UID | INSTANCE_NUMBER)
                            })
                            .cloned()
                            .collect(),
                    }) {
                        continue;
                    }
                    let instances = store
                        .dicom_instances(&st.study_uid, Some(&se.series_uid))
                        .await
                        .map_err(failed)?;
                    for i in &instances {
                        push(Row::Image(st, se, i), &mut out)?;
                    }
                }
            }
        }
    }
    Ok(out)
}

fn too_many(n: usize) -> Failure {
    fail(
        status::FIND_OUT_OF_RESOURCES,
        format!("more than {n} matches: narrow the query"),
    )
}

/// Encodes an answer in transfer syntax `ts` (one of the uncompressed ones).
pub fn encode(answer: &[(Tag, VR, String)], ts: &str) -> Result<Vec<u8>, String> {
    use dicom_transfer_syntax_registry::entries;
    let ts = if ts == crate::uids::IMPLICIT_VR_LE {
        entries::IMPLICIT_VR_LITTLE_ENDIAN.erased()
    } else {
        entries::EXPLICIT_VR_LITTLE_ENDIAN.erased()
    };
    let obj = InMemDicomObject::from_element_iter(answer.iter().map(|(t, vr, v)| {
        let tag = DTag((t >> 16) as u16, (t & 0xFFFF) as u16);
        let value = if v.is_empty() {
            PrimitiveValue::Empty
        } else {
            PrimitiveValue::from(v.as_str())
        };
        DataElement::new(tag, *vr, value)
    }));
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, &ts)
        .map_err(|e| format!("cannot encode a C-FIND answer: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_follows_the_standard() {
        assert!(matches("CT", VR::CS, Some("CT")));
        assert!(!matches("CT", VR::CS, Some("MR")));
        assert!(!matches("CT", VR::CS, None));
        assert!(matches("C?", VR::CS, Some("CT")));
        assert!(matches("CT\\MR", VR::CS, Some("SR\\MR")), "lists match any");
        assert!(matches("ACC*", VR::SH, Some("ACC0001")));
        assert!(
            !matches("acc*", VR::SH, Some("ACC0001")),
            "case-sensitive but for names"
        );
        assert!(matches("1.2.3\\1.2.4", VR::UI, Some("1.2.4")));
        assert!(!matches("1.2.3", VR::UI, Some("1.2.33")));
        assert!(matches("20260101-20260131", VR::DA, Some("20260115")));
        assert!(!matches("20260101-20260131", VR::DA, Some("20260201")));
        assert!(matches("-20260131", VR::DA, Some("19991231")));
        assert!(matches("20260101-", VR::DA, Some("20261231")));
        assert!(matches("0800-1200", VR::TM, Some("093015.123")));
        assert!(!matches("0800-0900", VR::TM, Some("093015")));
        let name = Some("Wang^XiaoDong=王^小东=");
        assert!(matches("王*", VR::PN, name));
        assert!(matches("wang*", VR::PN, name));
        assert!(matches("*小东", VR::PN, name));
        assert!(!matches("李*", VR::PN, name));
        assert!(matches("*", VR::PN, name));
    }

    #[test]
    fn glob_backtracks() {
        assert!(glob_str("a*b*c", "axxbyyc"));
        assert!(glob_str("*abc", "ababc"));
        assert!(!glob_str("a*b", "ac"));
        assert!(glob_str("", ""));
        assert!(!glob_str("", "a"));
    }

    #[test]
    fn identifiers_are_read_with_their_charset_and_answers_are_utf8() {
        let answer = vec![
            (SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192".to_owned()),
            (QUERY_RETRIEVE_LEVEL, VR::CS, "STUDY".to_owned()),
            (PATIENT_NAME, VR::PN, "王^小东".to_owned()),
            (PATIENT_ID, VR::LO, String::new()),
        ];
        let bytes = encode(&answer, crate::uids::EXPLICIT_VR_LE).unwrap();
        let utf8 = "王^小东".as_bytes();
        assert!(bytes.windows(utf8.len()).any(|w| w == utf8), "{bytes:x?}");
        // Read back as a query: the name is a matching key, the ID a return key.
        let q = Query::parse(&bytes, crate::uids::EXPLICIT_VR_LE, false).unwrap();
        assert_eq!(q.level, Level::Study);
        assert_eq!(q.value(PATIENT_NAME), Some("王^小东"));
        assert_eq!(
            q.keys.iter().find(|k| k.tag == PATIENT_ID).unwrap().value,
            None
        );
        // Implicit VR: VRs come from the dictionary.
        let bytes = encode(&answer, crate::uids::IMPLICIT_VR_LE).unwrap();
        let q = Query::parse(&bytes, crate::uids::IMPLICIT_VR_LE, false).unwrap();
        assert_eq!(
            q.keys.iter().find(|k| k.tag == PATIENT_NAME).unwrap().vr,
            VR::PN
        );
        // GB18030 identifiers are decoded too.
        let gb = vec![
            (SPECIFIC_CHARACTER_SET, VR::CS, "GB18030".to_owned()),
            (QUERY_RETRIEVE_LEVEL, VR::CS, "PATIENT".to_owned()),
        ];
        let mut bytes = encode(&gb, crate::uids::EXPLICIT_VR_LE).unwrap();
        let name = encoding_rs::GB18030.encode("王*").0;
        bytes.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'P', b'N']);
        bytes.extend_from_slice(&(name.len() as u16).to_le_bytes());
        bytes.extend_from_slice(&name);
        let q = Query::parse(&bytes, crate::uids::EXPLICIT_VR_LE, true).unwrap();
        assert_eq!(q.level, Level::Patient);
        assert_eq!(q.value(PATIENT_NAME), Some("王*"));
        // PATIENT level is patient root only.
        assert!(Query::parse(&bytes, crate::uids::EXPLICIT_VR_LE, false).is_err());
    }
}
