//! Times as the CLI prints them: ISO 8601 in UTC (`2026-11-23T20:19:16.123Z`) by default,
//! milliseconds since the Unix epoch with `--epoch`, in tables and JSON alike.

/// One time, as a table cell.
pub fn cell(ms: i64, epoch: bool) -> String {
    if epoch {
        ms.to_string()
    } else {
        huizhen_core::message::format_ms(ms)
    }
}

/// Rewrites the times of a JSON value in place: every integer under a key `at` or ending in
/// `_at` (the journal's milliseconds) becomes ISO 8601, unless `epoch`.
pub fn json(v: &mut serde_json::Value, epoch: bool) {
    if epoch {
        return;
    }
    match v {
        serde_json::Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                let is_time = k == "at" || k.ends_with("_at");
                match x.as_i64() {
                    Some(ms) if is_time => *x = huizhen_core::message::format_ms(ms).into(),
                    _ => json(x, epoch),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for x in items {
                json(x, epoch);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_become_iso_unless_epoch() {
        let mut v = serde_json::json!({
            "received_at": 1_764_979_200_000_i64,
            "attempts": 3,
            "next_attempt_at": null,
            "errors": [{ "at": 1_764_979_200_500_i64, "attempt": 1 }],
        });
        let raw = v.clone();
        json(&mut v, true);
        assert_eq!(v, raw);
        json(&mut v, false);
        assert_eq!(v["received_at"], "2025-12-06T00:00:00.000Z");
        assert_eq!(v["errors"][0]["at"], "2025-12-06T00:00:00.500Z");
        assert_eq!(v["attempts"], 3);
        assert!(v["next_attempt_at"].is_null());
        assert_eq!(cell(5, true), "5");
    }
}
