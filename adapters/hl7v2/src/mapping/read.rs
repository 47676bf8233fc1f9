//! Readers of HL7 v2 elements into the typed values of the records: text, dates, coded
//! values, identifiers, names, addresses, phones, locations, doctors, entity identifiers, and
//! the not-sent/null/value reading of a field (HL7-32). Shared by every mapping.

use super::EntityId;
use super::{Address, Coded, Doctor, Field, Identifier, Location, Name, Telecom, Timestamp};
use crate::escape::escape_cow;
use crate::parse::{Delimiters, Element, Segment, Value};

pub(super) fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x3FFFF | 0x3000..=0x303F)
}

pub(super) fn join_name(parts: &[&Option<String>]) -> String {
    let parts: Vec<&str> = parts.iter().filter_map(|p| p.as_deref()).collect();
    if parts.iter().any(|p| p.chars().any(is_cjk)) {
        parts.concat()
    } else {
        parts.join(" ")
    }
}

pub(super) fn phone_digits(number: &str) -> Option<String> {
    let d: String = number.chars().filter(char::is_ascii_digit).collect();
    let mobile = |rest: &str| rest.len() == 11 && rest.starts_with('1');
    let d = if let Some(rest) = d.strip_prefix("0086").filter(|r| mobile(r)) {
        rest.to_owned()
    } else if let Some(rest) = d.strip_prefix("86").filter(|r| mobile(r)) {
        rest.to_owned()
    } else {
        d
    };
    (!d.is_empty()).then_some(d)
}

// ---------------------------------------------------------------------------------------------
// Element readers
// ---------------------------------------------------------------------------------------------

/// The decoded, trimmed text of an element with content; `None` for missing, empty, `""` or
/// blank.
pub fn clean(e: Option<Element<'_>>) -> Option<String> {
    match e?.value() {
        Value::Data(d) => {
            let t = d.text();
            let t = t.trim();
            (!t.is_empty()).then(|| t.to_owned())
        }
        Value::Empty | Value::Null => None,
    }
}

pub fn comp(e: Element<'_>, c: usize) -> Option<String> {
    clean(e.component(c))
}

pub(super) fn sub(e: Element<'_>, c: usize, s: usize) -> Option<String> {
    clean(e.component(c).and_then(|c| c.subcomponent(s)))
}

pub(super) fn hd(e: Element<'_>, c: usize) -> Option<String> {
    sub(e, c, 1).or_else(|| sub(e, c, 2))
}

/// True when the element has at least one `""` and otherwise only empty parts.
pub(super) fn only_nulls(field: Element<'_>) -> bool {
    let mut any = false;
    for rep in field.repetitions() {
        for c in rep.components() {
            for s in c.subcomponents() {
                if s.is_null() {
                    any = true;
                } else if !s.raw().trim().is_empty() {
                    return false;
                }
            }
        }
    }
    any
}

/// Every usable repetition of a field, as a [`Field`] (see the module documentation).
pub(super) fn tri_list<'m, T>(
    seg: Option<Segment<'m>>,
    n: usize,
    f: impl FnMut(Element<'m>) -> Option<T>,
) -> Field<Vec<T>> {
    let Some(field) = seg.and_then(|s| s.field(n)) else {
        return Field::NotSent;
    };
    match field.value() {
        Value::Empty => Field::NotSent,
        Value::Null => Field::Null,
        Value::Data(field) => {
            let items: Vec<T> = field
                .repetitions()
                .filter(|r| !r.is_empty() && !r.is_null())
                .filter_map(f)
                .collect();
            if !items.is_empty() {
                Field::Value(items)
            } else if only_nulls(field) {
                Field::Null
            } else {
                Field::NotSent
            }
        }
    }
}

/// The first usable repetition of a field, as a [`Field`].
pub(super) fn tri_one<'m, T>(
    seg: Option<Segment<'m>>,
    n: usize,
    f: impl FnMut(Element<'m>) -> Option<T>,
) -> Field<T> {
    match tri_list(seg, n, f) {
        Field::NotSent => Field::NotSent,
        Field::Null => Field::Null,
        Field::Value(v) => v.into_iter().next().map_or(Field::NotSent, Field::Value),
    }
}

/// The first usable repetition of a field, or `None`.
pub fn one<'m, T>(
    seg: Segment<'m>,
    n: usize,
    f: impl FnMut(Element<'m>) -> Option<T>,
) -> Option<T> {
    tri_one(Some(seg), n, f).into_value()
}

/// Every usable repetition of a field (empty when not sent or null).
pub fn list<'m, T>(seg: Segment<'m>, n: usize, f: impl FnMut(Element<'m>) -> Option<T>) -> Vec<T> {
    tri_list(Some(seg), n, f).into_value().unwrap_or_default()
}

/// A repetition re-encoded with the standard delimiters (see [`ObservationValue::Raw`]).
pub(super) fn standard_encoding(rep: Element<'_>) -> String {
    let d = Delimiters::default();
    let components: Vec<String> = rep
        .components()
        .map(|c| {
            let subs: Vec<String> = c
                .subcomponents()
                .map(|s| match s.value() {
                    Value::Data(x) => escape_cow(&x.text(), &d).into_owned(),
                    Value::Null => "\"\"".to_owned(),
                    Value::Empty => String::new(),
                })
                .collect();
            subs.join("&")
        })
        .collect();
    components.join("^")
}

pub fn text_of(e: Element<'_>) -> Option<String> {
    comp(e, 1)
}

pub fn timestamp_of(e: Element<'_>) -> Option<Timestamp> {
    comp(e, 1).map(|raw| Timestamp::parse(&raw))
}

pub fn coded_of(e: Element<'_>) -> Option<Coded> {
    let c = Coded {
        code: comp(e, 1),
        text: comp(e, 2),
        system: comp(e, 3),
        alt_code: comp(e, 4),
        alt_text: comp(e, 5),
        alt_system: comp(e, 6),
    };
    (c != Coded::default()).then_some(c)
}

pub fn identifier_of(e: Element<'_>) -> Option<Identifier> {
    Some(Identifier {
        id: comp(e, 1)?,
        assigning_authority: hd(e, 4),
        type_code: comp(e, 5),
        resident_id_valid: None,
        resident_id: None,
    })
}

pub(super) fn name_of(e: Element<'_>) -> Option<Name> {
    let family = sub(e, 1, 1);
    let given = comp(e, 2);
    let further_given = comp(e, 3);
    if family.is_none() && given.is_none() && further_given.is_none() {
        return None;
    }
    let text = join_name(&[&family, &given, &further_given]);
    Some(Name {
        family,
        given,
        further_given,
        suffix: comp(e, 4),
        prefix: comp(e, 5),
        name_type: comp(e, 7),
        representation: comp(e, 8),
        text,
    })
}

pub(super) fn address_of(e: Element<'_>) -> Option<Address> {
    let a = Address {
        street: sub(e, 1, 1),
        other: comp(e, 2),
        city: comp(e, 3),
        province: comp(e, 4),
        postal_code: comp(e, 5),
        country: comp(e, 6),
        address_type: comp(e, 7),
        county: comp(e, 9),
    };
    let has_place = a.street.is_some()
        || a.other.is_some()
        || a.city.is_some()
        || a.province.is_some()
        || a.postal_code.is_some()
        || a.country.is_some()
        || a.county.is_some();
    has_place.then_some(a)
}

pub(super) fn telecom_of(e: Element<'_>) -> Option<Telecom> {
    let composed = || {
        let local = comp(e, 7)?;
        let mut parts = Vec::new();
        if let Some(cc) = comp(e, 5) {
            parts.push(format!("+{}", cc.trim_start_matches('+')));
        }
        parts.extend(comp(e, 6));
        parts.push(local);
        if let Some(ext) = comp(e, 8) {
            parts.push(format!("x{ext}"));
        }
        Some(parts.join(" "))
    };
    let number = comp(e, 1).or_else(|| comp(e, 12)).or_else(composed);
    let email = comp(e, 4);
    if number.is_none() && email.is_none() {
        return None;
    }
    Some(Telecom {
        digits: number.as_deref().and_then(phone_digits),
        number,
        use_code: comp(e, 2),
        equipment_type: comp(e, 3),
        email,
    })
}

pub fn location_of(e: Element<'_>) -> Option<Location> {
    let l = Location {
        point_of_care: comp(e, 1),
        room: comp(e, 2),
        bed: comp(e, 3),
        facility: hd(e, 4),
        building: comp(e, 7),
        floor: comp(e, 8),
        description: comp(e, 9),
    };
    let any = l.point_of_care.is_some()
        || l.room.is_some()
        || l.bed.is_some()
        || l.facility.is_some()
        || l.building.is_some()
        || l.floor.is_some()
        || l.description.is_some();
    any.then_some(l)
}

pub fn doctor_of(e: Element<'_>) -> Option<Doctor> {
    let id = comp(e, 1);
    let family = sub(e, 2, 1);
    let given = comp(e, 3);
    if id.is_none() && family.is_none() && given.is_none() {
        return None;
    }
    let text = (family.is_some() || given.is_some()).then(|| join_name(&[&family, &given]));
    Some(Doctor {
        id,
        family,
        given,
        text,
        assigning_authority: hd(e, 9),
    })
}

pub fn entity_of(e: Element<'_>) -> Option<EntityId> {
    Some(EntityId {
        id: comp(e, 1)?,
        namespace: comp(e, 2),
    })
}

pub(super) fn warn_bad_time(ts: Option<&Timestamp>, path: &str, warnings: &mut Vec<String>) {
    if ts.is_some_and(|t| t.iso.is_none()) {
        warnings.push(format!(
            "{path}: not an HL7 date/time (YYYY[MM[DD[HH[MM[SS]]]]][+/-ZZZZ]); kept as sent"
        ));
    }
}

/// Free text in a field: every repetition with content, escapes decoded (`\.br\` is a line
/// break), joined with line breaks. The whole repetition is read, so a `^` that a HIS forgot to
/// escape stays in the text instead of cutting it. `None` when there is no text.
pub(super) fn free_text(seg: Segment<'_>, n: usize) -> Option<String> {
    let field = seg.field(n)?;
    let lines: Vec<String> = field
        .repetitions()
        .filter_map(|r| match r.value() {
            Value::Data(d) => Some(d.text().into_owned()),
            Value::Empty | Value::Null => None,
        })
        .collect();
    let text = lines.join("\n");
    (!text.trim().is_empty()).then_some(text)
}

/// `NTE-3`, the comment.
pub fn note_of(nte: Segment<'_>) -> Option<String> {
    free_text(nte, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_phones() {
        let z = Some("张".to_owned());
        let g = Some("三丰".to_owned());
        assert_eq!(join_name(&[&z, &g, &None]), "张三丰");
        let z = Some("ZHANG".to_owned());
        let g = Some("SANFENG".to_owned());
        assert_eq!(join_name(&[&z, &g]), "ZHANG SANFENG");
        assert_eq!(
            phone_digits("+86 138-0013-8000").as_deref(),
            Some("13800138000")
        );
        assert_eq!(
            phone_digits("008613800138000").as_deref(),
            Some("13800138000")
        );
        assert_eq!(phone_digits("0771-5551234").as_deref(), Some("07715551234"));
        assert_eq!(phone_digits("n/a"), None);
    }
}
