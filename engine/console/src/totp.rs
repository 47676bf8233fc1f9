//! TOTP (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits), the second factor of local users, as
//! every authenticator app reads it from an `otpauth://` URI. A code is accepted in the step
//! before, at or after now (clock drift), and a step once only.

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Seconds per step.
pub const STEP: u64 = 30;

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding.
pub fn base32(data: &[u8]) -> String {
    let mut out = String::new();
    let mut buf: u64 = 0;
    let mut bits = 0;
    for b in data {
        buf = (buf << 8) | u64::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes base32 (case and spaces ignored, padding allowed).
pub fn unbase32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf: u64 = 0;
    let mut bits = 0;
    for c in text.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let v = ALPHABET
            .iter()
            .position(|a| *a as char == c.to_ascii_uppercase())? as u64;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    Some(out)
}

/// A new secret: 160 random bits, base32.
pub fn new_secret() -> String {
    base32(&rand::random::<[u8; 20]>())
}

/// The code of `step` for the base32 `secret`.
pub fn code(secret: &str, step: u64) -> Option<String> {
    let key = unbase32(secret)?;
    let mut mac = Hmac::<Sha1>::new_from_slice(&key).ok()?;
    mac.update(&step.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let off = (h[19] & 0xf) as usize;
    let bin = (u32::from(h[off] & 0x7f) << 24)
        | (u32::from(h[off + 1]) << 16)
        | (u32::from(h[off + 2]) << 8)
        | u32::from(h[off + 3]);
    Some(format!("{:06}", bin % 1_000_000))
}

/// The step of unix time `secs`.
pub fn step_at(secs: u64) -> u64 {
    secs / STEP
}

/// The step `given` matches around unix time `now_secs` (one step either way), if any.
pub fn matching_step(secret: &str, given: &str, now_secs: u64) -> Option<u64> {
    let given: String = given.chars().filter(|c| !c.is_whitespace()).collect();
    if given.len() != 6 || !given.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let now = step_at(now_secs);
    [now.saturating_sub(1), now, now + 1].into_iter().find(|s| {
        code(secret, *s).is_some_and(|c| huizhen_core::security::constant_time_eq(&c, &given))
    })
}

/// The URI an authenticator app reads (as a QR code or pasted): issuer `Huizhen`.
pub fn otpauth_uri(username: &str, secret: &str) -> String {
    format!(
        "otpauth://totp/Huizhen:{}?secret={secret}&issuer=Huizhen&algorithm=SHA1&digits=6&period={STEP}",
        crate::percent_encode(username)
    )
}

/// The `otpauth://` URI as a QR code (SVG) for the authenticator app's camera.
pub fn qr_svg(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 (the 8-digit values' last 6 digits).
    #[test]
    fn rfc6238_vectors() {
        let secret = base32(b"12345678901234567890");
        for (t, want) in [
            (59u64, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000, "353130"),
        ] {
            assert_eq!(code(&secret, step_at(t)).unwrap(), want, "t={t}");
        }
    }

    #[test]
    fn base32_round_trip_and_window() {
        for n in 0..25 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(unbase32(&base32(&data)).unwrap(), data);
        }
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        let s = new_secret();
        let now = 1_700_000_000;
        let c = code(&s, step_at(now) + 1).unwrap();
        assert_eq!(matching_step(&s, &c, now), Some(step_at(now) + 1));
        let late = code(&s, step_at(now) + 2).unwrap();
        assert_eq!(matching_step(&s, &late, now), None);
        assert_eq!(matching_step(&s, "12a456", now), None);
        assert!(otpauth_uri("li ming", &s).contains("Huizhen:li%20ming?secret="));
        let svg = qr_svg(&otpauth_uri("li", &s)).unwrap();
        assert!(svg.contains("<svg") && svg.contains("<path"), "{svg}");
    }
}
