//! The canonical form of a prescription: the exact bytes the prescriber signs (CN-21) and a
//! verifier re-reads years later.
//!
//! A versioned header line, then one `name:length:value` line per field in a fixed order, the
//! length in bytes of the UTF-8 value; so no value, whatever it contains (a colon, a newline),
//! can be read as another field. Absent optional values are written with length 0. Times are
//! RFC 3339 UTC (`2026-01-15T02:00:00Z`). What is signed: the ids, the prescriber, the draft
//! time and every line; not the state, the review or the delivery, which change afterwards.
//!
//! ```text
//! huizhen-prescription/1
//! id:6:rx-001
//! consultation_id:6:c-0001
//! …
//! lines:1:1
//! lines[0].drug_code:…
//! ```

use chrono::SecondsFormat;

use super::model::Prescription;

/// The header naming the format and its version; a new layout gets a new version.
pub const CANONICAL_HEADER: &str = "huizhen-prescription/1";

fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.push(b':');
    out.extend_from_slice(value.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

impl Prescription {
    /// The bytes the prescriber signs: deterministic (the same prescription always gives the
    /// same bytes) and unambiguous (see the module docs).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.lines.len() * 256);
        out.extend_from_slice(CANONICAL_HEADER.as_bytes());
        out.push(b'\n');
        field(&mut out, "id", &self.id);
        field(&mut out, "consultation_id", &self.consultation_id);
        field(&mut out, "patient_id", &self.patient_id);
        let (who, role) = self
            .prescriber
            .as_ref()
            .map_or(("", ""), |a| (a.id.as_str(), a.role.as_str()));
        field(&mut out, "prescriber.id", who);
        field(&mut out, "prescriber.role", role);
        let drafted = self
            .drafted_at
            .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            .unwrap_or_default();
        field(&mut out, "drafted_at", &drafted);
        field(&mut out, "lines", &self.lines.len().to_string());
        for (i, line) in self.lines.iter().enumerate() {
            let name = |f: &str| format!("lines[{i}].{f}");
            field(&mut out, &name("drug_code"), &line.drug_code);
            field(&mut out, &name("drug_name"), &line.drug_name);
            field(
                &mut out,
                &name("category"),
                line.category.as_deref().unwrap_or(""),
            );
            field(&mut out, &name("dose"), &line.dose);
            field(&mut out, &name("dose_unit"), &line.dose_unit);
            field(&mut out, &name("route"), line.route.as_str());
            field(&mut out, &name("frequency"), &line.frequency);
            field(&mut out, &name("days"), &line.days.to_string());
            field(&mut out, &name("quantity"), &line.quantity.to_string());
            field(&mut out, &name("quantity_unit"), &line.quantity_unit);
        }
        out
    }
}
