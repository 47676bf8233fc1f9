//! Transcoding for consumers that accept only Explicit VR Little Endian (DCM-02): from Implicit
//! VR Little Endian, Deflated Explicit VR Little Endian and Explicit VR Big Endian (retired).
//! Those only differ in how the same values are written, so the conversion is exact. Encapsulated
//! (compressed) pixel data is never decompressed or recompressed here: a consumer that accepts
//! neither the stored syntax nor `*` is answered 406 Not Acceptable (PS3.18 8.7.3.5), so a lossy
//! object is never passed off as lossless nor a lossless one degraded silently.
//!
//! [`choose`] picks what to send for the `transfer-syntax` parameters a WADO-RS request accepts;
//! [`to_explicit_le`] rewrites a stored Part 10 file.

use std::path::Path;

use dicom_object::OpenFileOptions;
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;

pub const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
pub const DEFLATED_LE: &str = "1.2.840.10008.1.2.1.99";
pub const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";

/// Whether a stored transfer syntax converts exactly to Explicit VR Little Endian here.
pub fn convertible(ts: &str) -> bool {
    matches!(ts, IMPLICIT_LE | EXPLICIT_LE | DEFLATED_LE | EXPLICIT_BE)
}

/// What the consumer asked for, from its Accept header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// No `transfer-syntax` parameter: Explicit VR Little Endian where that is exact, else as
    /// stored (PS3.18 makes Explicit VR LE the default; decompressing is not done here).
    Default,
    /// `transfer-syntax=*`: as stored.
    Any,
    /// These syntaxes, in order of preference.
    List(Vec<String>),
}

/// What to send for one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The stored file as it is.
    AsStored,
    /// Rewritten in Explicit VR Little Endian.
    ToExplicitLe,
}

/// Picks what to send an instance stored in `stored` as; `Err` with the reason (406).
pub fn choose(stored: &str, wanted: &Wanted) -> Result<Plan, String> {
    match wanted {
        Wanted::Any => Ok(Plan::AsStored),
        Wanted::Default if stored == EXPLICIT_LE || !convertible(stored) => Ok(Plan::AsStored),
        Wanted::Default => Ok(Plan::ToExplicitLe),
        Wanted::List(list) => {
            if list.iter().any(|t| t == stored || t == "*") {
                Ok(Plan::AsStored)
            } else if list.iter().any(|t| t == EXPLICIT_LE) && convertible(stored) {
                Ok(Plan::ToExplicitLe)
            } else {
                Err(format!(
                    "an instance is stored as {stored}, which cannot be converted to {} without \
                     decompressing or recompressing its pixel data; accept {stored} or \
                     transfer-syntax=*",
                    list.join(", ")
                ))
            }
        }
    }
}

/// A stored file rewritten as Explicit VR Little Endian (blocking: run it off the runtime).
/// The file meta group keeps its SOP class and instance, and names the new syntax.
pub fn to_explicit_le(path: &Path) -> Result<Vec<u8>, String> {
    let mut obj = OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| format!("the stored instance cannot be read: {e}"))?;
    let ts = obj.meta().transfer_syntax().to_owned();
    if !convertible(&ts) {
        return Err(format!(
            "instances stored as {ts} are not converted to Explicit VR Little Endian"
        ));
    }
    obj.update_meta(|m| m.set_transfer_syntax(&EXPLICIT_VR_LITTLE_ENDIAN));
    let mut out = Vec::new();
    obj.write_all(&mut out)
        .map_err(|e| format!("the instance cannot be written as Explicit VR LE: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

    const JPEG_LOSSLESS: &str = "1.2.840.10008.1.2.4.70";

    fn write(ts: &str, dir: &Path) -> std::path::PathBuf {
        let mut o = InMemDicomObject::new_empty();
        o.put(DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.7"),
        ));
        o.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3.4"),
        ));
        o.put(DataElement::new(
            tags::PATIENT_NAME,
            VR::PN,
            PrimitiveValue::from("Wang^XiaoDong"),
        ));
        o.put(DataElement::new(
            tags::ROWS,
            VR::US,
            PrimitiveValue::from(2_u16),
        ));
        o.put(DataElement::new(
            tags::COLUMNS,
            VR::US,
            PrimitiveValue::from(2_u16),
        ));
        o.put(DataElement::new(
            tags::BITS_ALLOCATED,
            VR::US,
            PrimitiveValue::from(16_u16),
        ));
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(vec![1, 256, 1000, 65535].into()),
        ));
        let f = o
            .with_meta(
                FileMetaTableBuilder::new()
                    .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
                    .media_storage_sop_instance_uid("1.2.3.4")
                    .transfer_syntax(ts),
            )
            .unwrap();
        let p = dir.join(format!("{ts}.dcm"));
        f.write_to_file(&p).unwrap();
        p
    }

    #[test]
    fn uncompressed_syntaxes_become_explicit_le_with_the_same_values() {
        let dir = tempfile::tempdir().unwrap();
        let reference = write(EXPLICIT_LE, dir.path());
        let want = std::fs::read(&reference).unwrap();
        for ts in [IMPLICIT_LE, DEFLATED_LE, EXPLICIT_BE] {
            let p = write(ts, dir.path());
            assert_ne!(std::fs::read(&p).unwrap(), want, "{ts} differs on disk");
            let got = to_explicit_le(&p).unwrap();
            let back = dicom_object::from_reader(&got[128..]).unwrap();
            assert_eq!(back.meta().transfer_syntax(), EXPLICIT_LE, "{ts}");
            let px = back.element(tags::PIXEL_DATA).unwrap();
            assert_eq!(
                px.to_multi_int::<u16>().unwrap(),
                vec![1, 256, 1000, 65535],
                "{ts}"
            );
            assert_eq!(
                back.element(tags::PATIENT_NAME).unwrap().to_str().unwrap(),
                "Wang^XiaoDong"
            );
            // The data set is byte for byte the one written as Explicit VR LE to begin with.
            let tail = |b: &[u8]| {
                let o = dicom_object::from_reader(&b[128..]).unwrap();
                let mut v = Vec::new();
                o.write_dataset(&mut v).unwrap();
                v
            };
            assert_eq!(tail(&got), tail(&want), "{ts}");
        }
    }

    #[test]
    fn compressed_pixel_data_is_never_converted() {
        assert_eq!(
            choose(JPEG_LOSSLESS, &Wanted::List(vec![EXPLICIT_LE.into()])).map_err(|_| ()),
            Err(())
        );
        assert_eq!(choose(JPEG_LOSSLESS, &Wanted::Default), Ok(Plan::AsStored));
        assert_eq!(choose(JPEG_LOSSLESS, &Wanted::Any), Ok(Plan::AsStored));
        assert_eq!(
            choose(JPEG_LOSSLESS, &Wanted::List(vec![JPEG_LOSSLESS.into()])),
            Ok(Plan::AsStored)
        );
        assert_eq!(
            choose(IMPLICIT_LE, &Wanted::List(vec![EXPLICIT_LE.into()])),
            Ok(Plan::ToExplicitLe)
        );
        assert_eq!(
            choose(IMPLICIT_LE, &Wanted::Default),
            Ok(Plan::ToExplicitLe)
        );
        assert_eq!(choose(EXPLICIT_LE, &Wanted::Default), Ok(Plan::AsStored));
        // Asking for a compressed syntax of an uncompressed instance: not done (no encoder).
        assert!(choose(EXPLICIT_LE, &Wanted::List(vec![JPEG_LOSSLESS.into()])).is_err());
    }
}
