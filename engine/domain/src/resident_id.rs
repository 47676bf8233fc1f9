//! Resident identity numbers (居民身份证号, GB 11643; STANDARDS MATCH-05).

use crate::datetime::parse_dtm;
use crate::patient::{ResidentId, Sex};

const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const ID_CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// Validates an 18-character resident identity number (居民身份证号, GB 11643): 17 digits
/// (6 region, 8 birth date `YYYYMMDD`, 3 sequence, the last odd for men) and the ISO 7064
/// MOD 11-2 check character (`0`–`9` or `X`; a lower-case `x` is accepted). Surrounding
/// whitespace is ignored. The error says what is wrong without repeating the number.
pub fn check_resident_id(s: &str) -> Result<ResidentId, String> {
    let chars: Vec<char> = s.trim().chars().collect();
    if chars.len() == 15 && chars.iter().all(char::is_ascii_digit) {
        return Err(
            "15-digit first-generation number, which has no check character (expected 18 characters)"
                .into(),
        );
    }
    if chars.len() != 18 {
        return Err(format!("{} characters, expected 18", chars.len()));
    }
    let mut sum = 0u32;
    let mut digits = [0u32; 17];
    for (i, (c, w)) in chars.iter().zip(ID_WEIGHTS).enumerate() {
        let Some(d) = c.to_digit(10) else {
            return Err(format!("character {} is not a digit", i + 1));
        };
        if let Some(slot) = digits.get_mut(i) {
            *slot = d;
        }
        sum += d * w;
    }
    let last = chars.get(17).map(char::to_ascii_uppercase);
    if !matches!(last, Some('0'..='9' | 'X')) {
        return Err("character 18 is not a digit or X".into());
    }
    let birth: String = chars.get(6..14).unwrap_or_default().iter().collect();
    let date = parse_dtm(&birth)
        .filter(|d| d.len() == 10)
        .ok_or_else(|| "characters 7-14 are not a valid birth date (YYYYMMDD)".to_owned())?;
    let expected = ID_CHECK.get((sum % 11) as usize).copied();
    if last != expected {
        return Err("the check character is wrong (ISO 7064 MOD 11-2)".into());
    }
    let sex = if digits.get(16).copied().unwrap_or(0) % 2 == 1 {
        Sex::Male
    } else {
        Sex::Female
    };
    Ok(ResidentId {
        region: chars.get(..6).unwrap_or_default().iter().collect(),
        birth_date: date,
        sex,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_id_check_character() {
        // The GB 11643 examples.
        let r = check_resident_id("11010519491231002X").unwrap();
        assert_eq!(r.region, "110105");
        assert_eq!(r.birth_date, "1949-12-31");
        assert_eq!(r.sex, Sex::Female);
        let r = check_resident_id("440524188001010014").unwrap();
        assert_eq!(r.birth_date, "1880-01-01");
        assert_eq!(r.sex, Sex::Male);
        assert!(check_resident_id(" 11010519491231002x ").is_ok());
        let err = check_resident_id("110105194912310021").unwrap_err();
        assert!(err.contains("check character"), "{err}");
        assert!(
            !err.contains("1101"),
            "errors never repeat the number: {err}"
        );
        assert!(
            check_resident_id("110105491231002")
                .unwrap_err()
                .contains("15-digit")
        );
        assert!(
            check_resident_id("1101051949123100")
                .unwrap_err()
                .contains("16 characters")
        );
        assert!(
            check_resident_id("11010519491231A02X")
                .unwrap_err()
                .contains("character 15")
        );
        assert!(
            check_resident_id("11010519491231002Y")
                .unwrap_err()
                .contains("character 18")
        );
        // 1949-02-30 does not exist (whatever the check character).
        assert!(
            check_resident_id("110105194902300020")
                .unwrap_err()
                .contains("birth date")
        );
        assert!(check_resident_id("张三丰张三丰张三丰张三丰张三丰张三丰").is_err());
        assert!(check_resident_id("").is_err());
    }
}
