//! The CSV form of the report, for the scheduled export (RFC 4180: CRLF line ends, a header
//! line, fields quoted when they hold a comma, a quote, a line break or surrounding spaces).
//!
//! Header (one line; columns as in [`StatsRow`](super::StatsRow)):
//!
//! ```text
//! scope,facility,department,volume,accepted,median_accept_seconds,p90_accept_seconds,completed,cancelled,failed,open,completion_rate,sla_breaches
//! ```
//!
//! An absent value (no facility on a department row, no percentile without an acceptance, no
//! rate without a closed consultation) is an empty field. `completion_rate` has four decimals
//! (`0.6667`). A text starting with `=`, `+`, `-`, `@`, tab or CR gets a leading `'` so a
//! spreadsheet never runs it as a formula. UTF-8, no byte-order mark.

use super::StatsRow;

/// The header line (without the line end).
pub const CSV_HEADER: &str = "scope,facility,department,volume,accepted,median_accept_seconds,\
                              p90_accept_seconds,completed,cancelled,failed,open,completion_rate,\
                              sla_breaches";

fn text(field: &str) -> String {
    let guarded = if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{field}")
    } else {
        field.to_owned()
    };
    let needs_quotes = guarded.contains([',', '"', '\r', '\n'])
        || guarded.starts_with(' ')
        || guarded.ends_with(' ');
    if needs_quotes {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// The rows as CSV, header first, each line ended by CRLF.
pub fn to_csv(rows: &[StatsRow]) -> String {
    let mut out = String::with_capacity(128 * (rows.len() + 1));
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    for r in rows {
        let rate = r.completion_rate.map(|x| format!("{x:.4}"));
        let fields = [
            r.scope.as_str().to_owned(),
            text(r.facility.as_deref().unwrap_or("")),
            text(r.department.as_deref().unwrap_or("")),
            r.volume.to_string(),
            r.accepted.to_string(),
            opt(r.median_accept_seconds),
            opt(r.p90_accept_seconds),
            r.completed.to_string(),
            r.cancelled.to_string(),
            r.failed.to_string(),
            r.open.to_string(),
            opt(rate),
            r.sla_breaches.to_string(),
        ];
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}
