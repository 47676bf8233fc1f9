//! Local code maps for `hl7v2_to_fhir` (HL7-40 "mappings are configurable"): a YAML file
//! that says which FHIR identifier system an HL7 assigning authority stands for, which code
//! system URI an HL7 coding-system name stands for, which standard coding a local code gets
//! (added before the code as sent), and which FHIR code a local value of a status-like field
//! becomes. Read once when the pipeline is built; every problem is reported as
//! `file:line:column: error: …` (through the config module's error form).
//!
//! ```yaml
//! version: 1
//! identifier_systems:            # CX.4 / EI.2 (HD.1, else HD.2) → Identifier.system
//!   县人民医院: http://county.example.cn/fhir/sid/mrn
//! code_systems:                  # CE.3 → Coding.system
//!   L: http://county.example.cn/fhir/CodeSystem/lab
//! codes:                         # field → local code (or `system|code`) → coding
//!   OBX-3:
//!     GLU: { system: http://loinc.org, code: 2345-7, display: Glucose }
//! values:                        # field → local value → FHIR code
//!   OBX-11: { V: final }
//!   PV1-2: { "3": AMB }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use fhir_sdk::r4b::codes::{
    AppointmentStatus, CompositionStatus, DiagnosticReportStatus, DocumentReferenceStatus,
    ObservationStatus, RequestStatus,
};
use huizhen_core::config::{ConfigError, parse_yaml};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// The coded fields whose local codes can be given a standard coding (`codes:`).
pub const CODE_TABLES: &[(&str, &str)] = &[
    ("OBX-3", "Observation.code"),
    ("OBX-6", "Observation.valueQuantity unit"),
    ("OBR-4", "DiagnosticReport.code, ServiceRequest.code"),
    ("OBR-31", "ServiceRequest.reasonCode"),
    ("DG1-3", "ServiceRequest.reasonCode"),
    ("PID-16", "Patient.maritalStatus"),
    ("PID-22", "Patient ethnic-group extension"),
    ("PV1-10", "Encounter.serviceType"),
    ("SCH-6", "Appointment.cancelationReason"),
    ("SCH-7", "Appointment.reasonCode"),
    ("SCH-8", "Appointment.appointmentType"),
    ("AIS-3", "Appointment.serviceType"),
    ("AIP-4", "Appointment.participant.type"),
    ("TXA-2", "DocumentReference.type"),
];

/// The fields whose local values map to a code of a fixed FHIR value set (`values:`).
pub const VALUE_TABLES: &[(&str, &str)] = &[
    ("PV1-2", "Encounter.class (v3 ActCode)"),
    (
        "OBX-8",
        "Observation.interpretation (v3 ObservationInterpretation)",
    ),
    ("OBX-11", "Observation.status"),
    ("OBR-25", "DiagnosticReport.status"),
    ("ORC-1", "ServiceRequest.status"),
    ("ORC-5", "ServiceRequest.status"),
    ("SCH-25", "Appointment.status"),
    ("TXA-17", "DocumentReference.docStatus"),
    ("TXA-19", "DocumentReference.status"),
];

/// Encounter.class codes (v3 ActCode, the R4 `encounter-class` value set).
pub const ENCOUNTER_CLASSES: &[&str] = &[
    "AMB", "EMER", "FLD", "HH", "IMP", "ACUTE", "NONAC", "OBSENC", "PRENC", "SS", "VR",
];

/// A standard coding a local code maps to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub system: String,
    pub code: String,
    #[serde(default)]
    pub display: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: Spanned<u32>,
    #[serde(default)]
    identifier_systems: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    code_systems: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    codes: BTreeMap<String, Spanned<BTreeMap<String, Spanned<Target>>>>,
    #[serde(default)]
    values: BTreeMap<String, Spanned<BTreeMap<String, Spanned<String>>>>,
}

/// The loaded maps (empty: the HL7-40 defaults only).
#[derive(Debug, Clone, Default)]
pub struct CodeMaps {
    identifier_systems: BTreeMap<String, String>,
    code_systems: BTreeMap<String, String>,
    codes: BTreeMap<String, BTreeMap<String, Target>>,
    values: BTreeMap<String, BTreeMap<String, String>>,
}

impl CodeMaps {
    /// Reads a code-map file; the errors (all of them) as `file:line:column: error: …`.
    pub fn load(file: &Path) -> Result<CodeMaps, Vec<ConfigError>> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            vec![ConfigError::file(
                file,
                format!("cannot read the code maps: {e}"),
            )]
        })?;
        CodeMaps::parse(file, &text)
    }

    /// Parses the text of a code-map file named `file`.
    pub fn parse(file: &Path, text: &str) -> Result<CodeMaps, Vec<ConfigError>> {
        let f: File = parse_yaml(file, text).map_err(|e| vec![e])?;
        let mut errors = Vec::new();
        let at = |s: &serde_saphyr::Location, msg: String| {
            ConfigError::at_line(file, text, s.line(), s.column(), msg)
        };
        if f.version.value != 1 {
            errors.push(at(
                &f.version.referenced,
                format!(
                    "version: {} is not supported (write `version: 1`)",
                    f.version.value
                ),
            ));
        }
        let mut maps = CodeMaps::default();
        for (name, what, m) in [
            (
                "identifier_systems",
                "an identifier system",
                &f.identifier_systems,
            ),
            ("code_systems", "a code system", &f.code_systems),
        ] {
            for (k, v) in m {
                if !is_uri(&v.value) {
                    errors.push(at(
                        &v.referenced,
                        format!(
                            "{name}.{k}: {:?} is not an absolute URI ({what} is written like http://… or urn:…)",
                            v.value
                        ),
                    ));
                }
            }
        }
        maps.identifier_systems = strip(&f.identifier_systems);
        maps.code_systems = strip(&f.code_systems);
        for (table, entries) in &f.codes {
            if !CODE_TABLES.iter().any(|(t, _)| t == table) {
                errors.push(at(
                    &entries.referenced,
                    format!(
                        "codes.{table}: not a field this step maps codes of (one of {})",
                        names(CODE_TABLES)
                    ),
                ));
                continue;
            }
            let mut out = BTreeMap::new();
            for (local, t) in &entries.value {
                if !is_uri(&t.value.system) || t.value.code.trim().is_empty() {
                    errors.push(at(
                        &t.referenced,
                        format!(
                            "codes.{table}.{local}: needs an absolute `system` URI and a `code`"
                        ),
                    ));
                }
                out.insert(local.clone(), t.value.clone());
            }
            maps.codes.insert(table.clone(), out);
        }
        for (table, entries) in &f.values {
            let Some(check) = value_check(table) else {
                errors.push(at(
                    &entries.referenced,
                    format!(
                        "values.{table}: not a field this step maps values of (one of {})",
                        names(VALUE_TABLES)
                    ),
                ));
                continue;
            };
            let mut out = BTreeMap::new();
            for (local, code) in &entries.value {
                if let Err(allowed) = check(&code.value) {
                    errors.push(at(
                        &code.referenced,
                        format!(
                            "values.{table}.{local}: {:?} is not a code of {} ({allowed})",
                            code.value,
                            VALUE_TABLES
                                .iter()
                                .find(|(t, _)| t == table)
                                .map_or("", |(_, w)| w)
                        ),
                    ));
                }
                out.insert(local.to_ascii_uppercase(), code.value.clone());
            }
            maps.values.insert(table.clone(), out);
        }
        if errors.is_empty() {
            Ok(maps)
        } else {
            Err(errors)
        }
    }

    /// The FHIR identifier system of an assigning authority: the `identifier_systems` entry;
    /// else the authority itself when it is a URI (`urn:…`, `http…`); `urn:oid:…` for an OID;
    /// else `urn:huizhen:id:<authority>` (percent-encoded). Without an authority, the sending
    /// facility (MSH-4) takes its place, and without that `urn:huizhen:id:local`.
    pub fn identifier_system(&self, authority: Option<&str>, facility: Option<&str>) -> String {
        let Some(a) = authority.or(facility).filter(|a| !a.trim().is_empty()) else {
            return "urn:huizhen:id:local".into();
        };
        if let Some(s) = self.identifier_systems.get(a) {
            return s.clone();
        }
        system_uri("urn:huizhen:id:", a)
    }

    /// The code system URI of an HL7 coding-system name (CE.3, table 0396): the
    /// `code_systems` entry, else the well-known ones (LN → LOINC, SCT → SNOMED CT, I10 →
    /// ICD-10, UCUM, HL7nnnn → the v2 table), else `urn:huizhen:code:<name>`; no name at
    /// all is `urn:huizhen:code:local`.
    pub fn code_system(&self, name: Option<&str>) -> String {
        let Some(n) = name.map(str::trim).filter(|n| !n.is_empty()) else {
            return "urn:huizhen:code:local".into();
        };
        if let Some(s) = self.code_systems.get(n) {
            return s.clone();
        }
        let upper = n.to_ascii_uppercase();
        match upper.as_str() {
            "LN" | "LOINC" => return "http://loinc.org".into(),
            "SCT" | "SNM" | "SNOMED" | "SNOMED-CT" => return "http://snomed.info/sct".into(),
            "I10" | "ICD10" | "ICD-10" => return "http://hl7.org/fhir/sid/icd-10".into(),
            "UCUM" | "UUM" => return "http://unitsofmeasure.org".into(),
            "DCM" => return "http://dicom.nema.org/resources/ontology/DCM".into(),
            _ => {}
        }
        if let Some(t) = upper.strip_prefix("HL7")
            && t.len() == 4
            && t.bytes().all(|b| b.is_ascii_digit())
        {
            return format!("http://terminology.hl7.org/CodeSystem/v2-{t}");
        }
        system_uri("urn:huizhen:code:", n)
    }

    /// The mapped coding of a local code of `table`: by `system|code`, else by `code`.
    pub fn code(&self, table: &str, system: Option<&str>, code: Option<&str>) -> Option<&Target> {
        let t = self.codes.get(table)?;
        let code = code?;
        system
            .and_then(|s| t.get(&format!("{s}|{code}")))
            .or_else(|| t.get(code))
    }

    /// The mapped FHIR code of a local value of `table` (compared in upper case).
    pub fn value(&self, table: &str, local: &str) -> Option<&str> {
        self.values
            .get(table)?
            .get(&local.trim().to_ascii_uppercase())
            .map(String::as_str)
    }
}

fn strip(m: &BTreeMap<String, Spanned<String>>) -> BTreeMap<String, String> {
    m.iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect()
}

fn names(tables: &[(&str, &str)]) -> String {
    tables
        .iter()
        .map(|(t, _)| *t)
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    !rest.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !s.chars().any(|c| c.is_whitespace() || !c.is_ascii())
}

/// `prefix` + the name, or the name when it is a URI already, or `urn:oid:` + an OID.
fn system_uri(prefix: &str, name: &str) -> String {
    let n = name.trim();
    if is_uri(n) && (n.starts_with("urn:") || n.starts_with("http")) {
        return n.to_owned();
    }
    if n.contains('.')
        && n.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return format!("urn:oid:{n}");
    }
    format!("{prefix}{}", percent_encode(n))
}

/// Percent-encodes everything but unreserved ASCII (RFC 3986), so a Chinese authority name
/// makes a valid URI.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

type Check = fn(&str) -> Result<(), String>;

fn value_check(table: &str) -> Option<Check> {
    fn parses<T: std::str::FromStr>(s: &str, allowed: &str) -> Result<(), String> {
        s.parse::<T>().map(|_| ()).map_err(|_| allowed.to_owned())
    }
    Some(match table {
        "PV1-2" => |s| {
            if ENCOUNTER_CLASSES.contains(&s) {
                Ok(())
            } else {
                Err(ENCOUNTER_CLASSES.join(", "))
            }
        },
        "OBX-8" => |s| {
            if !s.is_empty() && s.len() <= 8 && s.chars().all(|c| c.is_ascii_graphic()) {
                Ok(())
            } else {
                Err("a v3 ObservationInterpretation code such as H, L, A, N, HH, LL".into())
            }
        },
        "OBX-11" => |s| {
            parses::<ObservationStatus>(
                s,
                "registered, preliminary, final, amended, corrected, cancelled, entered-in-error, unknown",
            )
        },
        "OBR-25" => |s| {
            parses::<DiagnosticReportStatus>(
                s,
                "registered, partial, preliminary, final, amended, corrected, appended, cancelled, entered-in-error, unknown",
            )
        },
        "ORC-1" | "ORC-5" => |s| {
            parses::<RequestStatus>(
                s,
                "draft, active, on-hold, revoked, completed, entered-in-error, unknown",
            )
        },
        "SCH-25" => |s| {
            parses::<AppointmentStatus>(
                s,
                "proposed, pending, booked, arrived, fulfilled, cancelled, noshow, entered-in-error, checked-in, waitlist",
            )
        },
        "TXA-17" => {
            |s| parses::<CompositionStatus>(s, "preliminary, final, amended, entered-in-error")
        }
        "TXA-19" => {
            |s| parses::<DocumentReferenceStatus>(s, "current, superseded, entered-in-error")
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CodeMaps, String> {
        CodeMaps::parse(Path::new("codes.yaml"), text).map_err(|es| {
            es.iter()
                .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    #[test]
    fn maps_are_read() {
        let m = parse(
            "version: 1\nidentifier_systems:\n  HIS: http://h.example/mrn\ncode_systems:\n  L: http://h.example/lab\ncodes:\n  OBX-3:\n    GLU: { system: http://loinc.org, code: 2345-7 }\n    L|HB: { system: http://loinc.org, code: 718-7, display: Hemoglobin }\nvalues:\n  OBX-11: { v: final }\n",
        )
        .unwrap();
        assert_eq!(
            m.identifier_system(Some("HIS"), None),
            "http://h.example/mrn"
        );
        assert_eq!(m.code_system(Some("L")), "http://h.example/lab");
        assert_eq!(
            m.code("OBX-3", Some("L"), Some("HB")).unwrap().code,
            "718-7"
        );
        assert_eq!(
            m.code("OBX-3", Some("X"), Some("GLU")).unwrap().code,
            "2345-7"
        );
        assert_eq!(m.code("OBX-3", None, Some("HB")), None);
        assert_eq!(m.value("OBX-11", "V"), Some("final"));
    }

    #[test]
    fn errors_have_line_and_column() {
        let e = parse("version: 1\nvalues:\n  OBX-11:\n    V: finished\n  PV1-99: { I: IMP }\n")
            .unwrap_err();
        assert!(
            e.contains("4:8: values.OBX-11.V: \"finished\" is not a code of Observation.status"),
            "{e}"
        );
        assert!(e.contains("values.PV1-99: not a field"), "{e}");
        let e = parse("version: 1\ncodes:\n  OBX-3:\n    GLU: { system: loinc, code: x }\n")
            .unwrap_err();
        assert!(
            e.contains("4:10: codes.OBX-3.GLU: needs an absolute `system` URI"),
            "{e}"
        );
        let e = parse("version: 1\ncodez: {}\n").unwrap_err();
        assert!(e.starts_with("2:1:"), "{e}");
    }

    #[test]
    fn default_systems() {
        let m = CodeMaps::default();
        assert_eq!(
            m.identifier_system(Some("县医院"), None),
            "urn:huizhen:id:%E5%8E%BF%E5%8C%BB%E9%99%A2"
        );
        assert_eq!(
            m.identifier_system(Some("1.2.156.1"), None),
            "urn:oid:1.2.156.1"
        );
        assert_eq!(m.identifier_system(None, Some("LIS")), "urn:huizhen:id:LIS");
        assert_eq!(m.identifier_system(None, None), "urn:huizhen:id:local");
        assert_eq!(m.code_system(Some("LN")), "http://loinc.org");
        assert_eq!(
            m.code_system(Some("HL70078")),
            "http://terminology.hl7.org/CodeSystem/v2-0078"
        );
        assert_eq!(m.code_system(Some("99ZH")), "urn:huizhen:code:99ZH");
        assert_eq!(m.code_system(None), "urn:huizhen:code:local");
    }
}
