//! The code tables and value shapes an order is read with: ICD-10 coding systems and codes,
//! the department in a service text, DICOM Study Instance UIDs.

use super::Department;
use crate::mapping::Coded;

/// Words around a department name that name the service instead (see [`Department`]).
const SERVICE_PREFIXES: &[&str] = &["远程", "申请"];
const SERVICE_SUFFIXES: &[&str] = &[
    "会诊申请",
    "会诊",
    "申请",
    "consultation request",
    "consultation",
    "consult",
];

pub(super) fn department_of(service: &Coded) -> Option<Department> {
    let name = service.text.as_deref().and_then(|text| {
        let mut t = text.trim();
        for p in SERVICE_PREFIXES {
            t = t.strip_prefix(p).unwrap_or(t).trim_start();
        }
        for s in SERVICE_SUFFIXES {
            let cut = t.len().saturating_sub(s.len());
            if let (Some(head), Some(tail)) = (t.get(..cut), t.get(cut..))
                && tail.eq_ignore_ascii_case(s)
            {
                t = head.trim_end();
                break;
            }
        }
        (!t.is_empty()).then(|| t.to_owned())
    });
    if service.code.is_none() && name.is_none() {
        return None;
    }
    Some(Department {
        code: service.code.clone(),
        name,
        system: service.system.clone(),
    })
}

/// True for a coding-system name that means ICD-10 (HL7 table 0396 `I10`, and the names
/// Chinese HIS use: `ICD10`, `ICD-10`, `ICD-10-CN`, `ICD10国家临床版`, `GB/T 14396`).
pub(super) fn is_icd10_system(system: &str) -> bool {
    let s: String = system
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    s == "I10"
        || (s.starts_with("ICD10") && !s.starts_with("ICD10PCS"))
        || s.starts_with("GBT14396")
}

/// True for a code with the shape of an ICD-10 diagnosis code: a letter, a digit, a digit or
/// letter, then optionally `.` and up to 8 letters or digits, or up to 4 without the dot
/// (`J18`, `J18.9`, `I20.000`, `K35.800x002`, `I209`, `U07.1`).
pub fn is_icd10_code(code: &str) -> bool {
    let b = code.as_bytes();
    let head = b.len() >= 3
        && b[0].is_ascii_alphabetic()
        && b[1].is_ascii_digit()
        && b[2].is_ascii_alphanumeric();
    if !head {
        return false;
    }
    let rest = &b[3..];
    match rest.split_first() {
        None => true,
        Some((b'.', tail)) => {
            (1..=8).contains(&tail.len()) && tail.iter().all(u8::is_ascii_alphanumeric)
        }
        Some(_) => rest.len() <= 4 && rest.iter().all(u8::is_ascii_alphanumeric),
    }
}

/// OBX codes that mean "Study Instance UID" (DICOM `113014` Study, tag `0020000D`).
pub(super) fn names_study_uid(code: &Coded) -> bool {
    let c: String = code
        .code
        .as_deref()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    matches!(
        c.as_str(),
        "113014" | "0020000D" | "STUDYUID" | "STUDYINSTANCEUID"
    ) || code
        .text
        .as_deref()
        .is_some_and(|t| t.to_ascii_lowercase().contains("study instance uid"))
}

/// A DICOM UID: up to 64 characters, numeric components separated by dots, no leading zero.
pub(super) fn is_uid(s: &str) -> bool {
    s.len() <= 64
        && s.contains('.')
        && s.split('.').all(|arc| {
            !arc.is_empty()
                && arc.bytes().all(|b| b.is_ascii_digit())
                && (arc == "0" || !arc.starts_with('0'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icd10_shapes() {
        for good in [
            "J18",
            "J18.9",
            "I20.000",
            "K35.800x002",
            "I209",
            "U07.1",
            "C7A",
            "S72.001A",
        ] {
            assert!(is_icd10_code(good), "{good}");
        }
        for bad in [
            "",
            "J1",
            "18.9",
            "J18.",
            "J18.123456789",
            "J18-9",
            "张三",
            "JJ8",
            "J18 9",
        ] {
            assert!(!is_icd10_code(bad), "{bad}");
        }
        for system in [
            "I10",
            "ICD10",
            "ICD-10",
            "icd-10-cn",
            "ICD10国家临床版",
            "GB/T 14396-2016",
        ] {
            assert!(is_icd10_system(system), "{system}");
        }
        for system in ["I9", "ICD9CM", "I10P", "ICD-10-PCS", "L", "99ZY"] {
            assert!(!is_icd10_system(system), "{system}");
        }
    }

    #[test]
    fn departments_from_the_service_text() {
        let dept = |text: &str| {
            department_of(&Coded {
                code: Some("X".into()),
                text: Some(text.into()),
                ..Coded::default()
            })
            .and_then(|d| d.name)
        };
        assert_eq!(dept("远程心内科会诊").as_deref(), Some("心内科"));
        assert_eq!(dept("神经内科会诊申请").as_deref(), Some("神经内科"));
        assert_eq!(
            dept("Cardiology Consultation").as_deref(),
            Some("Cardiology")
        );
        assert_eq!(dept("呼吸内科").as_deref(), Some("呼吸内科"));
        assert_eq!(dept("远程会诊"), None);
    }

    #[test]
    fn uids() {
        assert!(is_uid("1.2.840.113619.2.55.3.604688119.969.1268071029.320"));
        assert!(is_uid("1.2.156.0.1"));
        assert!(!is_uid("1.2.03"));
        assert!(!is_uid("12345"));
        assert!(!is_uid("1..2"));
        assert!(!is_uid("1.2.a"));
    }
}
