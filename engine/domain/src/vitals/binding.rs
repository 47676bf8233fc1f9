//! Which patient a device was lent to when it measured: a device is bound to one patient's
//! record (a local id in a facility's namespace, resolved to the person through the identity
//! index) for a period; the reading goes to the binding whose period holds its measurement
//! time, so a cuff handed from one patient to the next never files a reading under the wrong one.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One binding: `device` measured for (`facility`, `local_id`) from `valid_from` until
/// `valid_to` (exclusive; `None` = still lent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceBinding {
    pub device: String,
    pub facility: String,
    pub local_id: String,
    pub valid_from: DateTime<Utc>,
    pub valid_to: Option<DateTime<Utc>>,
}

impl DeviceBinding {
    pub fn holds(&self, at: DateTime<Utc>) -> bool {
        self.valid_from <= at && self.valid_to.is_none_or(|t| at < t)
    }
}

/// Why no binding answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    #[error("device is bound to no patient")]
    Unbound,
    #[error(
        "device is bound to no patient at the measurement time ({0} binding(s) at other times)"
    )]
    NotAtThatTime(usize),
    #[error(
        "device has {0} bindings at the measurement time; a reading is filed under one patient only"
    )]
    Ambiguous(usize),
    #[error("valid_to is not after valid_from")]
    EmptyPeriod,
}

/// The binding of the device at `at`, among the device's bindings.
pub fn binding_at(
    bindings: &[DeviceBinding],
    at: DateTime<Utc>,
) -> Result<&DeviceBinding, BindingError> {
    if bindings.is_empty() {
        return Err(BindingError::Unbound);
    }
    let hits: Vec<&DeviceBinding> = bindings.iter().filter(|b| b.holds(at)).collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(BindingError::NotAtThatTime(bindings.len())),
        many => Err(BindingError::Ambiguous(many.len())),
    }
}

/// Checks a new binding against the device's others: a period that is not empty and overlaps
/// none of them (a device measures for one patient at a time).
pub fn check_new(existing: &[DeviceBinding], new: &DeviceBinding) -> Result<(), String> {
    if new.valid_to.is_some_and(|t| t <= new.valid_from) {
        return Err(BindingError::EmptyPeriod.to_string());
    }
    for b in existing.iter().filter(|b| b.device == new.device) {
        let starts_before_other_ends = b.valid_to.is_none_or(|t| new.valid_from < t);
        let ends_after_other_starts = new.valid_to.is_none_or(|t| b.valid_from < t);
        if starts_before_other_ends && ends_after_other_starts {
            return Err(format!(
                "overlaps the binding from {} to {} (end it first: a device measures for one patient at a time)",
                b.valid_from.to_rfc3339(),
                b.valid_to.map_or("open".to_owned(), |t| t.to_rfc3339())
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }
    fn b(local: &str, from: &str, to: Option<&str>) -> DeviceBinding {
        DeviceBinding {
            device: "BP-1".into(),
            facility: "f".into(),
            local_id: local.into(),
            valid_from: t(from),
            valid_to: to.map(t),
        }
    }

    #[test]
    fn the_binding_at_the_measurement_time_answers() {
        let all = [
            b("A", "2026-01-01T00:00:00Z", Some("2026-06-01T00:00:00Z")),
            b("B", "2026-06-01T00:00:00Z", None),
        ];
        assert_eq!(
            binding_at(&all, t("2026-05-31T23:59:59Z"))
                .unwrap()
                .local_id,
            "A"
        );
        assert_eq!(
            binding_at(&all, t("2026-06-01T00:00:00Z"))
                .unwrap()
                .local_id,
            "B"
        );
        assert_eq!(
            binding_at(&all, t("2025-12-31T00:00:00Z")).unwrap_err(),
            BindingError::NotAtThatTime(2)
        );
        assert_eq!(
            binding_at(&[], t("2026-01-01T00:00:00Z")).unwrap_err(),
            BindingError::Unbound
        );
    }

    #[test]
    fn overlapping_bindings_are_refused() {
        let all = [b("A", "2026-01-01T00:00:00Z", Some("2026-06-01T00:00:00Z"))];
        check_new(&all, &b("B", "2026-06-01T00:00:00Z", None)).unwrap();
        assert!(check_new(&all, &b("B", "2026-05-01T00:00:00Z", None)).is_err());
        assert!(
            check_new(
                &all,
                &b("B", "2025-05-01T00:00:00Z", Some("2026-01-02T00:00:00Z"))
            )
            .is_err()
        );
        assert!(
            check_new(
                &[],
                &b("B", "2026-05-01T00:00:00Z", Some("2026-05-01T00:00:00Z"))
            )
            .is_err()
        );
    }
}
