//! Dates and times as HIS systems send them.

use chrono::NaiveDate;

/// HL7 DTM → ISO 8601 at the precision sent; `None` when not a valid date/time.
pub fn parse_dtm(input: &str) -> Option<String> {
    let s = input.trim();
    let dashed;
    let s = if s.as_bytes().get(4) == Some(&b'-') {
        // 1985-03-12, 2026-01-15 08:30:00, 2026-01-15T08:30:00+08:00
        if s.as_bytes().get(7) != Some(&b'-') {
            return None;
        }
        let head: String = s
            .chars()
            .take(19)
            .filter(|c| !matches!(c, '-' | ':' | ' ' | 'T'))
            .collect();
        let tail: String = s.chars().skip(19).filter(|c| *c != ':').collect();
        dashed = head + &tail;
        dashed.as_str()
    } else {
        s
    };
    let (main, tz) = match s.find(['+', '-']) {
        Some(i) => (s.get(..i)?, Some(s.get(i..)?)),
        None => (s, None),
    };
    let (whole, frac) = match main.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (main, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || ![4, 6, 8, 10, 12, 14].contains(&whole.len()) {
        return None;
    }
    if let Some(f) = frac
        && (whole.len() != 14 || !digits(f) || f.len() > 4)
    {
        return None;
    }
    let num = |a: usize, b: usize| -> Option<u32> { whole.get(a..b)?.parse().ok() };
    let year = num(0, 4)?;
    let mut out = format!("{year:04}");
    if whole.len() >= 6 {
        let month = num(4, 6)?;
        if !(1..=12).contains(&month) {
            return None;
        }
        out.push_str(&format!("-{month:02}"));
        if whole.len() >= 8 {
            let day = num(6, 8)?;
            NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
            out.push_str(&format!("-{day:02}"));
        }
    }
    if whole.len() >= 10 {
        let hour = num(8, 10)?;
        let minute = if whole.len() >= 12 { num(10, 12)? } else { 0 };
        if hour > 23 || minute > 59 {
            return None;
        }
        out.push_str(&format!("T{hour:02}:{minute:02}"));
        if whole.len() >= 14 {
            let second = num(12, 14)?;
            if second > 59 {
                return None;
            }
            out.push_str(&format!(":{second:02}"));
            if let Some(f) = frac {
                out.push('.');
                out.push_str(f);
            }
        }
    }
    if let Some(tz) = tz {
        let (sign, rest) = tz.split_at_checked(1)?;
        if rest.len() != 4 || !digits(rest) {
            return None;
        }
        let hh: u32 = rest.get(..2)?.parse().ok()?;
        let mm: u32 = rest.get(2..)?.parse().ok()?;
        if hh > 14 || mm > 59 {
            return None;
        }
        if whole.len() >= 10 {
            out.push_str(&format!("{sign}{hh:02}:{mm:02}"));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patient::Timestamp;

    #[test]
    fn dtm_to_iso() {
        let cases = [
            ("1985", Some("1985")),
            ("198503", Some("1985-03")),
            ("19850312", Some("1985-03-12")),
            ("1985031208", Some("1985-03-12T08:00")),
            ("198503120830", Some("1985-03-12T08:30")),
            ("20260115083005", Some("2026-01-15T08:30:05")),
            (
                "20260115083005.25+0800",
                Some("2026-01-15T08:30:05.25+08:00"),
            ),
            ("202601150830-0500", Some("2026-01-15T08:30-05:00")),
            ("19850312+0800", Some("1985-03-12")),
            ("1985-03-12", Some("1985-03-12")),
            ("2026-01-15 08:30:00", Some("2026-01-15T08:30:00")),
            (
                "2026-01-15T08:30:00+08:00",
                Some("2026-01-15T08:30:00+08:00"),
            ),
            ("20240229", Some("2024-02-29")),
            ("20230229", None),
            ("19851312", None),
            ("198503121", None),
            ("2026011508300", None),
            ("20260115250000", None),
            ("20260115083005+08", None),
            ("1985-3-12", None),
            ("unknown", None),
            ("", None),
            ("张三", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_dtm(input).as_deref(), want, "{input}");
        }
        assert_eq!(Timestamp::parse("198503120830").date(), Some("1985-03-12"));
        assert_eq!(Timestamp::parse("198503").date(), None);
    }
}
