//! The UIDs the adapter speaks: its own implementation identity, the service SOP classes, the
//! transfer syntaxes it accepts as received (STANDARDS DCM-02), and which abstract syntaxes are
//! storage SOP classes (from dicom-rs's standard UID dictionary).

use dicom_core::dictionary::{UidDictionary, UidType};
use dicom_dictionary_std::sop_class;

/// This implementation's class UID (a UUID-derived `2.25` UID, PS3.5 B.2).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.41649852192211129805567559713119146212";
/// Sent in the association and in file meta headers.
pub const IMPLEMENTATION_VERSION_NAME: &str = "HUIZHEN_010";

/// The DICOM application context.
pub const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";

pub const VERIFICATION: &str = "1.2.840.10008.1.1";
pub const PATIENT_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.1.1";
pub const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
pub const PATIENT_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.1.2";
pub const PATIENT_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.1.3";
pub const STUDY_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
pub const STUDY_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";

pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";

/// The transfer syntaxes a storage presentation context may use, in the SCP's order of
/// preference (what it picks when a context proposes several), with a short name. Everything
/// is stored as received: no transcoding on receipt (DCM-02).
pub const STORAGE_TRANSFER_SYNTAXES: &[(&str, &str)] = &[
    (EXPLICIT_VR_LE, "Explicit VR Little Endian"),
    (IMPLICIT_VR_LE, "Implicit VR Little Endian"),
    (
        DEFLATED_EXPLICIT_VR_LE,
        "Deflated Explicit VR Little Endian",
    ),
    ("1.2.840.10008.1.2.4.70", "JPEG Lossless SV1"),
    ("1.2.840.10008.1.2.4.57", "JPEG Lossless"),
    ("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless"),
    ("1.2.840.10008.1.2.4.81", "JPEG-LS Near-Lossless"),
    ("1.2.840.10008.1.2.4.90", "JPEG 2000 Lossless"),
    ("1.2.840.10008.1.2.4.91", "JPEG 2000"),
    ("1.2.840.10008.1.2.5", "RLE Lossless"),
    ("1.2.840.10008.1.2.4.50", "JPEG Baseline"),
    ("1.2.840.10008.1.2.4.51", "JPEG Extended"),
    ("1.2.840.10008.1.2.4.201", "HTJ2K Lossless"),
    ("1.2.840.10008.1.2.4.202", "HTJ2K Lossless RPCL"),
    ("1.2.840.10008.1.2.4.203", "HTJ2K"),
    ("1.2.840.10008.1.2.4.100", "MPEG2 MP@ML"),
    ("1.2.840.10008.1.2.4.101", "MPEG2 MP@HL"),
    ("1.2.840.10008.1.2.4.102", "MPEG-4 AVC/H.264 HP@4.1"),
    ("1.2.840.10008.1.2.4.103", "MPEG-4 AVC/H.264 BD"),
    ("1.2.840.10008.1.2.4.104", "MPEG-4 AVC/H.264 HP@4.2 2D"),
    ("1.2.840.10008.1.2.4.105", "MPEG-4 AVC/H.264 HP@4.2 3D"),
    ("1.2.840.10008.1.2.4.106", "MPEG-4 AVC/H.264 Stereo HP@4.2"),
    ("1.2.840.10008.1.2.4.107", "HEVC/H.265 Main@5.1"),
    ("1.2.840.10008.1.2.4.108", "HEVC/H.265 Main 10@5.1"),
    (EXPLICIT_VR_BE, "Explicit VR Big Endian (retired)"),
];

/// The transfer syntaxes of the command-only and query services: the uncompressed ones.
pub const PLAIN_TRANSFER_SYNTAXES: &[&str] = &[EXPLICIT_VR_LE, IMPLICIT_VR_LE];

/// Whether `uid` names a storage SOP class of the standard (its dictionary name says
/// "Storage", and it is not Storage Commitment or the DICOMDIR).
pub fn is_storage_sop_class(uid: &str) -> bool {
    let Some(e) = sop_class::registry().by_uid(uid.trim_end_matches('\0').trim()) else {
        return false;
    };
    e.r#type == UidType::SopClass
        && e.name.contains("Storage")
        && !e.name.starts_with("Storage Commitment")
        && !e.name.starts_with("Media Storage Directory")
}

/// The name of a standard UID, or the UID itself.
pub fn name(uid: &str) -> String {
    if let Some((_, n)) = STORAGE_TRANSFER_SYNTAXES.iter().find(|(u, _)| *u == uid) {
        return (*n).to_owned();
    }
    sop_class::registry()
        .by_uid(uid)
        .map_or_else(|| uid.to_owned(), |e| e.name.to_owned())
}

/// Whether `uid` is a well-formed UID (PS3.5 9.1: digits and dots, components without leading
/// zeros, at most 64 characters). Only such UIDs become file names.
pub fn is_valid(uid: &str) -> bool {
    huizhen_domain::consultation::study::is_uid(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_classes_are_told_from_services() {
        assert!(is_storage_sop_class("1.2.840.10008.5.1.4.1.1.2")); // CT Image Storage
        assert!(is_storage_sop_class("1.2.840.10008.5.1.4.1.1.7")); // Secondary Capture
        assert!(is_storage_sop_class("1.2.840.10008.5.1.4.1.1.88.59")); // Key Object Selection
        assert!(is_storage_sop_class("1.2.840.10008.5.1.4.1.1.104.1")); // Encapsulated PDF
        assert!(!is_storage_sop_class(VERIFICATION));
        assert!(!is_storage_sop_class(STUDY_ROOT_FIND));
        assert!(!is_storage_sop_class("1.2.840.10008.1.20.1")); // Storage Commitment
        assert!(!is_storage_sop_class("1.2.840.10008.1.3.10")); // DICOMDIR
        assert!(!is_storage_sop_class("1.2.3.4"));
    }

    #[test]
    fn uids_are_checked_before_they_name_files() {
        assert!(is_valid("1.2.840.10008.5.1.4.1.1.2"));
        assert!(is_valid("2.25.0"));
        assert!(!is_valid(""));
        assert!(!is_valid("1..2"));
        assert!(!is_valid("1.02"));
        assert!(!is_valid("../../etc/passwd"));
        assert!(!is_valid(&"1.".repeat(40)));
        assert_eq!(name("1.2.840.10008.1.2.4.80"), "JPEG-LS Lossless");
        assert_eq!(name("1.2.840.10008.5.1.4.1.1.2"), "CT Image Storage");
    }
}
