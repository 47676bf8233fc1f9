//! `ADT^A01/A04/A05/A08/A28/A31/A40` → [`PatientRecord`], and the patient parts every
//! mapping shares: the `PID` identifiers (with resident identity number checks, MATCH-05),
//! sex, the cross-check of birth date and sex against the identity number, and `PV1`.

use super::read::{
    address_of, coded_of, doctor_of, identifier_of, list, location_of, name_of, one, telecom_of,
    text_of, timestamp_of, tri_list, tri_one, warn_bad_time,
};
use super::{
    AdministrativeSex, Field, Header, Identifier, MappingError, Merge, PatientRecord,
    PatientSummary, Sex, Timestamp, Visit, check_resident_id,
};
use crate::parse::{Message, Segment};

pub(super) fn sex_of(code: &str) -> Option<Sex> {
    match code.trim().to_ascii_uppercase().as_str() {
        "M" | "1" | "MALE" | "男" | "男性" => Some(Sex::Male),
        "F" | "2" | "FEMALE" | "女" | "女性" => Some(Sex::Female),
        "O" | "A" | "OTHER" => Some(Sex::Other),
        "U" | "N" | "0" | "9" | "UNKNOWN" | "未知" | "未知的性别" | "未说明" | "未说明的性别" => {
            Some(Sex::Unknown)
        }
        _ => None,
    }
}

pub(super) fn sex_field(
    code: Option<String>,
    warnings: &mut Vec<String>,
) -> Option<AdministrativeSex> {
    let code = code?;
    let normalized = sex_of(&code).unwrap_or_else(|| {
        warnings.push(
            "PID-8: code not in HL7 table 0001 or GB/T 2261.1; read as unknown, kept as sent"
                .into(),
        );
        Sex::Unknown
    });
    Some(AdministrativeSex { code, normalized })
}

// ---------------------------------------------------------------------------------------------
// Patient parts shared by ADT and ORU
// ---------------------------------------------------------------------------------------------

/// The identifiers of a CX field with their 1-based repetition numbers; `NI` ones checked.
pub(super) fn identifiers_in(
    seg: Segment<'_>,
    n: usize,
    label: &str,
    warnings: &mut Vec<String>,
) -> Vec<(usize, Identifier)> {
    let Some(field) = seg.field(n) else {
        return Vec::new();
    };
    if field.is_null() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, rep) in field.repetitions().enumerate() {
        if rep.is_null() {
            continue;
        }
        let Some(mut ident) = identifier_of(rep) else {
            continue;
        };
        let is_ni = ident
            .type_code
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("NI"));
        if is_ni {
            match check_resident_id(&ident.id) {
                Ok(r) => {
                    ident.resident_id_valid = Some(true);
                    ident.resident_id = Some(r);
                }
                Err(reason) => {
                    ident.resident_id_valid = Some(false);
                    warnings.push(format!(
                        "{label}[{}]: NI identifier is not a valid resident identity number: {reason}; kept as sent",
                        i + 1
                    ));
                }
            }
        }
        out.push((i + 1, ident));
    }
    out
}

/// `PID-3`, else `PID-2`, else `PID-4`, with the path they came from.
pub(super) fn patient_identifiers(
    pid: Segment<'_>,
    warnings: &mut Vec<String>,
) -> (&'static str, Vec<(usize, Identifier)>) {
    let found = identifiers_in(pid, 3, "PID-3", warnings);
    if !found.is_empty() {
        return ("PID-3", found);
    }
    for (n, label) in [(2, "PID-2"), (4, "PID-4")] {
        let found = identifiers_in(pid, n, label, warnings);
        if !found.is_empty() {
            warnings.push(format!(
                "PID-3: no patient identifier; used {label} (an older HIS layout)"
            ));
            return (label, found);
        }
    }
    ("PID-3", Vec::new())
}

/// Compares valid resident identity numbers with `PID-7` and `PID-8`.
pub(super) fn cross_check(
    label: &str,
    ids: &[(usize, Identifier)],
    birth: Option<&Timestamp>,
    sex: Option<&AdministrativeSex>,
    warnings: &mut Vec<String>,
) {
    for (i, ident) in ids {
        let Some(r) = &ident.resident_id else {
            continue;
        };
        if let Some(date) = birth.and_then(Timestamp::date)
            && date != r.birth_date
        {
            warnings.push(format!(
                "PID-7: the birth date differs from the one in the resident identity number {label}[{i}]"
            ));
        }
        if let Some(s) = sex
            && matches!(s.normalized, Sex::Male | Sex::Female)
            && s.normalized != r.sex
        {
            warnings.push(format!(
                "PID-8: the sex differs from the one in the resident identity number {label}[{i}]"
            ));
        }
    }
}

pub(super) fn map_adt(message: &Message, h: Header) -> Result<PatientRecord, MappingError> {
    let merge = h.trigger == "A40";
    let mut warnings = Vec::new();
    let pid = message.segment("PID", 1).ok_or_else(|| {
        MappingError::unusable("PID", "missing: an ADT message needs the patient segment")
    })?;
    if message.segment("PID", 2).is_some() {
        if merge {
            return Err(MappingError::unusable(
                "PID[2]",
                "an ADT^A40 with several merges; the built-in mapping reads one merge per message (split it)",
            ));
        }
        warnings.push("PID[2]: a second PID segment; only the first is mapped".into());
    }
    let (id_label, ids) = patient_identifiers(pid, &mut warnings);
    if ids.is_empty() {
        return Err(MappingError::unusable("PID-3", "no patient identifier"));
    }
    let p = Some(pid);
    let birth_date = tri_one(p, 7, timestamp_of);
    warn_bad_time(birth_date.value(), "PID-7", &mut warnings);
    let sex = match tri_one(p, 8, text_of) {
        Field::NotSent => Field::NotSent,
        Field::Null => Field::Null,
        Field::Value(code) => {
            sex_field(Some(code), &mut warnings).map_or(Field::NotSent, Field::Value)
        }
    };
    cross_check(
        id_label,
        &ids,
        birth_date.value(),
        sex.value(),
        &mut warnings,
    );

    let evn = message.segment("EVN", 1);
    let evn_time = evn.and_then(|e| one(e, 2, timestamp_of));
    let event_time = match evn_time {
        Some(t) => {
            warn_bad_time(Some(&t), "EVN-2", &mut warnings);
            Some(t)
        }
        None => {
            warn_bad_time(h.event_time.as_ref(), "MSH-7", &mut warnings);
            h.event_time
        }
    };

    let visit = message
        .segment("PV1", 1)
        .map(|pv1| visit_of(pv1, &mut warnings));

    let merge = if merge {
        let mrg = message.segment("MRG", 1).ok_or_else(|| {
            MappingError::unusable(
                "MRG",
                "missing: an ADT^A40 needs the prior identifiers (MRG-1)",
            )
        })?;
        let prior = identifiers_in(mrg, 1, "MRG-1", &mut warnings);
        if prior.is_empty() {
            return Err(MappingError::unusable(
                "MRG-1",
                "no prior patient identifier",
            ));
        }
        Some(Merge {
            prior_identifiers: prior.into_iter().map(|(_, i)| i).collect(),
            prior_account_number: one(mrg, 3, identifier_of),
            prior_visit_number: one(mrg, 5, identifier_of),
            prior_names: list(mrg, 7, name_of),
        })
    } else {
        None
    };

    Ok(PatientRecord {
        message_type: format!("{}^{}", h.message_type, h.trigger),
        event: h.trigger,
        event_time,
        control_id: h.control_id,
        sending_application: h.sending_application,
        sending_facility: h.sending_facility,
        identifiers: ids.into_iter().map(|(_, i)| i).collect(),
        names: tri_list(p, 5, name_of),
        birth_date,
        sex,
        addresses: tri_list(p, 11, address_of),
        home_phones: tri_list(p, 13, telecom_of),
        business_phones: tri_list(p, 14, telecom_of),
        marital_status: tri_one(p, 16, coded_of),
        ethnic_group: tri_one(p, 22, coded_of),
        visit,
        merge,
        warnings,
    })
}

/// A `PID` as the patient of a result or an order: identifiers (possibly none; the caller
/// decides whether that is an error), names, birth date and sex, cross-checked as for ADT.
pub fn summary_of(pid: Segment<'_>, warnings: &mut Vec<String>) -> PatientSummary {
    let (label, ids) = patient_identifiers(pid, warnings);
    let birth_date = one(pid, 7, timestamp_of);
    warn_bad_time(birth_date.as_ref(), "PID-7", warnings);
    let sex = sex_field(one(pid, 8, text_of), warnings);
    cross_check(label, &ids, birth_date.as_ref(), sex.as_ref(), warnings);
    PatientSummary {
        identifiers: ids.into_iter().map(|(_, i)| i).collect(),
        names: list(pid, 5, name_of),
        birth_date,
        sex,
    }
}

/// `PV1`: class, location, attending doctors, service, visit number, admit time.
pub fn visit_of(pv1: Segment<'_>, warnings: &mut Vec<String>) -> Visit {
    let s = Some(pv1);
    let v = Visit {
        patient_class: tri_one(s, 2, text_of),
        location: tri_one(s, 3, location_of),
        attending_doctors: tri_list(s, 7, doctor_of),
        hospital_service: tri_one(s, 10, text_of),
        visit_number: tri_one(s, 19, identifier_of),
        admit_time: tri_one(s, 44, timestamp_of),
    };
    warn_bad_time(v.admit_time.value(), "PV1-44", warnings);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sexes() {
        for (code, sex) in [
            ("M", Sex::Male),
            ("f", Sex::Female),
            ("1", Sex::Male),
            ("2", Sex::Female),
            ("男", Sex::Male),
            ("女", Sex::Female),
            ("9", Sex::Unknown),
            ("A", Sex::Other),
        ] {
            assert_eq!(sex_of(code), Some(sex), "{code}");
        }
        assert_eq!(sex_of("X"), None);
    }
}
