//! Durations in YAML as human text: `500ms`, `2s`, `5m`, `1h`, `7d` (humantime syntax).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

const EXAMPLES: &str = "e.g. 500ms, 2s, 5m, 1h, 7d";

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(serde::de::Error::custom)
}

/// Parses a duration; the error says what is wrong in words for the person editing the file.
pub fn parse(s: &str) -> Result<Duration, String> {
    use humantime::DurationError as E;
    humantime::parse_duration(s.trim()).map_err(|e| {
        let why = match e {
            E::Empty => format!("a duration is needed, {EXAMPLES}"),
            E::UnknownUnit { unit, value, .. } if unit.is_empty() => {
                format!("a unit is needed, e.g. {value}s or {value}ms")
            }
            E::UnknownUnit { unit, .. } => {
                format!("unknown unit {unit:?}; use ms, s, m, h or d, {EXAMPLES}")
            }
            E::NumberOverflow => "the number is too large (or finer than 1ns)".to_owned(),
            E::NumberExpected(_) | E::InvalidCharacter(_) => {
                format!("write a number followed by a unit, {EXAMPLES}")
            }
        };
        format!("invalid duration {s:?}: {why}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_explains() {
        assert_eq!(parse("1500ms").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse(" 7d ").unwrap(), Duration::from_secs(7 * 86400));
        assert!(
            parse("5")
                .unwrap_err()
                .contains("a unit is needed, e.g. 5s")
        );
        let err = parse("5 fortnights").unwrap_err();
        assert!(err.contains("unknown unit \"fortnights\""), "{err}");
        assert!(
            parse("soon")
                .unwrap_err()
                .contains("write a number followed by a unit")
        );
    }
}
