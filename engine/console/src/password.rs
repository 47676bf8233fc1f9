//! Password hashes (argon2id, PHC strings with a random salt) and the password rule.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Hashes a password with argon2id (the crate's defaults: 19 MiB, 2 passes, 1 lane: OWASP's
/// minimum for argon2id) and a random 128-bit salt.
pub fn hash(password: &str) -> Result<String, String> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| format!("salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("argon2: {e}"))
}

/// Whether `password` matches the stored PHC hash (false for an empty or unreadable hash).
pub fn verify(password: &str, stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// A hash of a random password, verified against when the user does not exist, so that an
/// unknown name takes as long as a known one.
pub fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash(&hex::encode(rand::random::<[u8; 16]>())).unwrap_or_default())
}

/// The password rule (GB/T 22239 identity checks: complexity): at least 10 characters, of at
/// least three of lower case, upper case, digits and other characters, not the user name.
pub fn check_rule(username: &str, password: &str) -> Result<(), String> {
    if password.chars().count() < 10 {
        return Err("the password needs at least 10 characters".into());
    }
    if password.chars().count() > 256 {
        return Err("the password may have at most 256 characters".into());
    }
    let classes = [
        password.chars().any(|c| c.is_lowercase()),
        password.chars().any(|c| c.is_uppercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_alphanumeric()),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if classes < 3 {
        return Err(
            "the password needs three of: lower case, upper case, digits, other characters".into(),
        );
    }
    if password.to_lowercase().contains(&username.to_lowercase()) {
        return Err("the password may not contain the user name".into());
    }
    Ok(())
}

/// A random password that passes [`check_rule`]: 20 characters of an alphabet without look-alike
/// characters, with a digit, an upper and a lower case letter and a dash in fixed places.
pub fn generate() -> String {
    const LOWER: &[u8] = b"abcdefghjkmnpqrstuvwxyz";
    const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
    const DIGIT: &[u8] = b"23456789";
    let bytes: [u8; 20] = rand::random();
    let mut out = String::new();
    for (i, b) in bytes.iter().enumerate() {
        let set = match i % 4 {
            0 | 1 => LOWER,
            2 => UPPER,
            _ => DIGIT,
        };
        out.push(set[*b as usize % set.len()] as char);
        if i == 9 {
            out.push('-');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash("Correct-horse-9").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("Correct-horse-9", &h));
        assert!(!verify("correct-horse-9", &h));
        assert!(!verify("x", ""));
        assert_ne!(hash("Correct-horse-9").unwrap(), h, "salted");
    }

    #[test]
    fn rule() {
        assert!(check_rule("li", "short").is_err());
        assert!(check_rule("li", "alllowercaseletters").is_err());
        assert!(check_rule("li", "Lower-and-Upper").is_ok());
        assert!(check_rule("admin", "MyAdmin-Pass1").is_err());
        for _ in 0..20 {
            let p = generate();
            assert!(check_rule("admin", &p).is_ok(), "{p}");
        }
    }
}
