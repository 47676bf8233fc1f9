//! Encryption at rest of what carries patient data: message bodies, effect bodies, header
//! values, error texts.
//!
//! AES-256-GCM (RustCrypto `aes-gcm`) with a key ring: every ciphertext names the key it was
//! sealed with, so keys can be rotated online (`huizhen keys rotate` re-encrypts in batches) and
//! old ones retired once nothing uses them. Equality on sealed data goes through a keyed HMAC
//! blind index (the dedup hash of a body, the dedup key), never a bare SHA-256, which a
//! dictionary of likely values would reverse. Everything is behind [`Cipher`] so SM4-GCM /
//! SM3-HMAC can replace it (STANDARDS CN-31) without touching the callers.
//!
//! Every sealed value is bound to its logical place, a [`Binding`] of (message id, field name),
//! and to the key id, through AES-GCM's associated data: a value copied into another message,
//! another field (body → effect, one header → another) or relabelled with another key id fails
//! to open, and the error names the message and the field. The binding names no table or row,
//! so a value may move to another table or file and still open where it logically belongs.
//!
//! Format of a sealed value: `\0HZE2`, one byte with the length of the key id, the key id, a
//! 12-byte random nonce, then the ciphertext and its 16-byte tag; the associated data is
//! [`aad`] of the binding and the key id. Values written before the binding existed start with
//! `\0HZE1` (no associated data): they still open, with a warning logged once per process, and
//! `huizhen keys rotate --reencrypt` re-seals them bound. A value without either prefix is
//! refused ([`CryptoError::Clear`]): with encryption on nothing is read as plaintext. Text
//! columns hold `hze:` and the sealed bytes in base64.
//!
//! The key file (`security.encryption.keys_file`, default `data/keys`, created mode 0600 on first
//! start when missing) has one key per line, `ID BASE64` (32 bytes); the line `index BASE64`
//! holds the blind-index key, which is never rotated. The active key is
//! `security.encryption.active`, or the last key of the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;

/// Sealed with a binding (associated data).
const MAGIC: &[u8] = b"\0HZE2";
/// Sealed before bindings existed: no associated data.
const MAGIC_V1: &[u8] = b"\0HZE1";
/// A sealed value in a text column: this prefix, then the sealed bytes in base64.
pub const TEXT_PREFIX: &str = "hze:";
/// A dedup key as stored when encryption is on: this prefix, then its blind index.
pub const INDEX_PREFIX: &str = "hmac:";

/// Where a sealed value belongs: the message it is part of and the field within it (`body`,
/// `effect/<sink>`, `header/<name>`, `last_error`, `error`). Logical names only (no table,
/// no row id), so a value keeps opening if it moves to another table or file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    pub message: &'a str,
    pub field: &'a str,
}

impl<'a> Binding<'a> {
    pub fn new(message: &'a str, field: &'a str) -> Binding<'a> {
        Binding { message, field }
    }
}

/// The associated data of a binding sealed with key `key`: a domain tag, then each part with
/// its length, so no two different triples give the same bytes.
pub fn aad(b: &Binding<'_>, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + b.message.len() + b.field.len() + key.len() + 12);
    out.extend_from_slice(b"huizhen-aad-v2");
    for part in [b.message, b.field, key] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// Values opened this process that were sealed before bindings existed (`\0HZE1`).
static UNBOUND_OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many unbound (`\0HZE1`) values this process has opened.
pub fn unbound_opened() -> u64 {
    UNBOUND_OPENED.load(std::sync::atomic::Ordering::Relaxed)
}

/// `security.encryption:` in the root config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// Encrypt message and effect bodies at rest. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The key file; created with a fresh key and index key when missing.
    #[serde(default = "default_keys_file")]
    pub keys_file: PathBuf,
    /// The id of the key new data is sealed with (default: the last key in the file).
    #[serde(default)]
    pub active: Option<String>,
    /// The keys themselves instead of a file, typically `${HUIZHEN_DATA_KEYS}`: the key file's
    /// lines, separated by newlines or `;`. `keys_file` is then not used (and `keys rotate`
    /// prints the new key to add instead of writing it).
    #[serde(default)]
    pub keys: Option<crate::security::Secret>,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        EncryptionConfig {
            enabled: true,
            keys_file: default_keys_file(),
            active: None,
            keys: None,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_keys_file() -> PathBuf {
    "data/keys".into()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("sealed with key {0:?}, which is not in the key file")]
    UnknownKey(String),
    #[error(
        "cannot be opened: it was sealed for another message or field (copied here), or changed, or the key under its id is not the one it was sealed with"
    )]
    Tampered,
    #[error("truncated sealed value")]
    Truncated,
    #[error("stored in clear while encryption is on")]
    Clear,
    #[error("sealed text is not valid base64")]
    BadText,
}

/// The key ring.
pub struct Cipher {
    keys: HashMap<String, Aes256Gcm>,
    active: String,
    index: Vec<u8>,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cipher")
            .field("active", &self.active)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

fn random32() -> [u8; 32] {
    use rand::RngCore;
    let mut k = [0u8; 32];
    rand::rng().fill_bytes(&mut k);
    k
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Appends a new key to the key file (for rotation) and returns its id.
pub fn add_key(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the key file: {e}", path.display()))?;
    let n = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .count();
    let id = format!("k{}-{}", n, crate::message::now_ms() / 1000);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: cannot write the key file: {e}", path.display()))?;
    use std::io::Write;
    writeln!(f, "{id} {}", b64(&random32()))
        .map_err(|e| format!("{}: cannot write the key file: {e}", path.display()))?;
    Ok(id)
}

fn create_key_file(path: &Path) -> Result<(), String> {
    let text = format!(
        "# Huizhen data keys: `ID BASE64(32 bytes)` per line; `index` is the blind-index key.\n# Keep this file away from the database (a secrets store, another disk); without it the\n# message bodies cannot be read.\nindex {}\nk1 {}\n",
        b64(&random32()),
        b64(&random32())
    );
    if crate::security::create_file_once(path, text.as_bytes())
        .map_err(|e| format!("{}: cannot create the key file: {e}", path.display()))?
    {
        tracing::info!(file = %path.display(), "created a new data key file");
    }
    Ok(())
}

impl Cipher {
    /// The cipher of the config: `None` when encryption is off.
    pub fn from_config(cfg: &EncryptionConfig) -> Result<Option<Cipher>, String> {
        if !cfg.enabled {
            return Ok(None);
        }
        if let Some(k) = &cfg.keys {
            return Cipher::parse(
                &k.expose().replace(';', "\n"),
                "security.encryption.keys",
                cfg.active.as_deref(),
            )
            .map(Some);
        }
        if !cfg.keys_file.exists() {
            create_key_file(&cfg.keys_file)?;
        }
        Cipher::load(&cfg.keys_file, cfg.active.as_deref()).map(Some)
    }

    /// Reads a key file.
    pub fn load(path: &Path, active: Option<&str>) -> Result<Cipher, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read the key file: {e}", path.display()))?;
        Cipher::parse(&text, &path.display().to_string(), active)
    }

    /// Reads keys in the key file's format; `origin` names where they came from in errors.
    pub fn parse(text: &str, origin: &str, active: Option<&str>) -> Result<Cipher, String> {
        let mut keys = HashMap::new();
        let mut last = None;
        let mut index = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = || format!("{origin}:{}", n + 1);
            let (id, key) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("{}: expected `ID BASE64`", at()))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(key.trim())
                .map_err(|e| format!("{}: key {id:?} is not base64: {e}", at()))?;
            if bytes.len() != 32 {
                return Err(format!(
                    "{}: key {id:?} has {} bytes; AES-256 needs 32",
                    at(),
                    bytes.len()
                ));
            }
            if id.len() > 64 {
                return Err(format!("{}: key id {id:?} is longer than 64 bytes", at()));
            }
            if id == "index" {
                index = Some(bytes);
                continue;
            }
            let cipher = Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| format!("{}: key {id:?} is not a valid AES-256 key", at()))?;
            if keys.insert(id.to_owned(), cipher).is_some() {
                return Err(format!("{}: key id {id:?} appears twice", at()));
            }
            last = Some(id.to_owned());
        }
        let index = index.ok_or_else(|| format!("{origin}: no `index` key (blind index)"))?;
        let active = match active {
            Some(a) if keys.contains_key(a) => a.to_owned(),
            Some(a) => {
                return Err(format!(
                    "security.encryption.active: key {a:?} is not in {origin}"
                ));
            }
            None => last.ok_or_else(|| format!("{origin}: no data key"))?,
        };
        Ok(Cipher {
            keys,
            active,
            index,
        })
    }

    /// The key new data is sealed with.
    pub fn active(&self) -> &str {
        &self.active
    }

    /// Encrypts with the active key, bound to `b`.
    pub fn seal(&self, plain: &[u8], b: &Binding<'_>) -> Vec<u8> {
        use aes_gcm::aead::Payload;
        use rand::RngCore;
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let cipher = &self.keys[&self.active];
        let aad = aad(b, &self.active);
        // Encryption with a valid key and a 12-byte nonce does not fail.
        let ct = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let id = self.active.as_bytes();
        let mut out = Vec::with_capacity(MAGIC.len() + 1 + id.len() + 12 + ct.len());
        out.extend_from_slice(MAGIC);
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypts a value sealed for `b`. A value without the cipher prefix is
    /// [`CryptoError::Clear`]; one sealed before bindings existed opens (and is counted, see
    /// [`unbound_opened`]).
    pub fn open(&self, data: &[u8], b: &Binding<'_>) -> Result<Vec<u8>, CryptoError> {
        use aes_gcm::aead::Payload;
        let (bound, rest) = if let Some(rest) = data.strip_prefix(MAGIC) {
            (true, rest)
        } else if let Some(rest) = data.strip_prefix(MAGIC_V1) {
            (false, rest)
        } else {
            return Err(CryptoError::Clear);
        };
        let (&len, rest) = rest.split_first().ok_or(CryptoError::Truncated)?;
        let len = len as usize;
        if rest.len() < len + 12 + 16 {
            return Err(CryptoError::Truncated);
        }
        let id = String::from_utf8_lossy(&rest[..len]).into_owned();
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&rest[len..len + 12]);
        let ct = &rest[len + 12..];
        let cipher = self
            .keys
            .get(&id)
            .ok_or_else(|| CryptoError::UnknownKey(id.clone()))?;
        let aad = if bound { aad(b, &id) } else { Vec::new() };
        let plain = cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| CryptoError::Tampered)?;
        if !bound && UNBOUND_OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
            tracing::warn!(
                message = b.message,
                field = b.field,
                "a value sealed before values were bound to their message and field was opened; run `huizhen keys rotate --reencrypt` to re-seal such values bound"
            );
        }
        Ok(plain)
    }

    /// Seals text for a text column: [`TEXT_PREFIX`] and the sealed bytes in base64.
    pub fn seal_text(&self, plain: &str, b: &Binding<'_>) -> String {
        format!("{TEXT_PREFIX}{}", b64(&self.seal(plain.as_bytes(), b)))
    }

    /// Opens what [`Cipher::seal_text`] made. Text without the prefix is [`CryptoError::Clear`].
    pub fn open_text(&self, text: &str, b: &Binding<'_>) -> Result<String, CryptoError> {
        let sealed = text.strip_prefix(TEXT_PREFIX).ok_or(CryptoError::Clear)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| CryptoError::BadText)?;
        let plain = self.open(&bytes, b)?;
        // Sealed from a `&str`: valid UTF-8 unless it was forged, which the tag rules out.
        String::from_utf8(plain).map_err(|_| CryptoError::Tampered)
    }

    /// The key id a value was sealed with; `None` for plaintext.
    pub fn key_of(data: &[u8]) -> Option<String> {
        let rest = data
            .strip_prefix(MAGIC)
            .or_else(|| data.strip_prefix(MAGIC_V1))?;
        let (&len, rest) = rest.split_first()?;
        rest.get(..len as usize)
            .map(|id| String::from_utf8_lossy(id).into_owned())
    }

    /// The key id of a sealed text value; `None` for text in clear.
    pub fn key_of_text(text: &str) -> Option<String> {
        let sealed = text.strip_prefix(TEXT_PREFIX)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .ok()?;
        Cipher::key_of(&bytes)
    }

    /// `true` when a value is sealed bound and with the active key: nothing for a rotation to do.
    pub fn is_current(&self, data: &[u8]) -> bool {
        data.starts_with(MAGIC) && Cipher::key_of(data).as_deref() == Some(self.active.as_str())
    }

    /// [`Cipher::is_current`] for a text value.
    pub fn is_current_text(&self, text: &str) -> bool {
        text.strip_prefix(TEXT_PREFIX)
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .is_some_and(|b| self.is_current(&b))
    }

    /// The dedup key as stored: its blind index, which equality lookups need and which does
    /// not reveal the key (an `Idempotency-Key` or a control id may carry patient data).
    pub fn dedup_index(&self, key: &str) -> String {
        let mut data = Vec::with_capacity(key.len() + 10);
        data.extend_from_slice(b"dedup-key\0");
        data.extend_from_slice(key.as_bytes());
        format!("{INDEX_PREFIX}{}", self.blind_index(&data))
    }

    /// The keyed blind index of a value (HMAC-SHA256, hex).
    pub fn blind_index(&self, data: &[u8]) -> String {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.index)
            .expect("HMAC takes keys of any length");
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }
}

/// The cipher of a key file, reloaded when the file changes, so that `huizhen keys rotate` works
/// while engines run: a value sealed with a key this process has not loaded yet makes it read the
/// file again, and the file's modification time is checked every few seconds so new data moves
/// to the new active key.
pub struct Keyring {
    path: PathBuf,
    /// Keys from `security.encryption.keys` (the environment): nothing to reload.
    inline: bool,
    active: Option<String>,
    current: std::sync::RwLock<std::sync::Arc<Cipher>>,
    checked: std::sync::Mutex<(std::time::Instant, Option<std::time::SystemTime>)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("path", &self.path).finish()
    }
}

const RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

impl Keyring {
    /// The key ring of the config: `None` when encryption is off.
    pub fn from_config(cfg: &EncryptionConfig) -> Result<Option<std::sync::Arc<Keyring>>, String> {
        let Some(c) = Cipher::from_config(cfg)? else {
            return Ok(None);
        };
        Ok(Some(std::sync::Arc::new(Keyring {
            path: cfg.keys_file.clone(),
            inline: cfg.keys.is_some(),
            active: cfg.active.clone(),
            current: std::sync::RwLock::new(std::sync::Arc::new(c)),
            checked: std::sync::Mutex::new((
                std::time::Instant::now(),
                std::fs::metadata(&cfg.keys_file)
                    .and_then(|m| m.modified())
                    .ok(),
            )),
        })))
    }

    fn reload(&self) {
        if self.inline {
            return;
        }
        match Cipher::load(&self.path, self.active.as_deref()) {
            Ok(c) => {
                tracing::info!(file = %self.path.display(), active = c.active(), "data keys reloaded");
                if let Ok(mut cur) = self.current.write() {
                    *cur = std::sync::Arc::new(c);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "data keys not reloaded; the loaded ones stay in use")
            }
        }
    }

    /// The current cipher (reloaded first if the key file changed).
    pub fn cipher(&self) -> std::sync::Arc<Cipher> {
        let changed = {
            let mut c = self.checked.lock().unwrap_or_else(|p| p.into_inner());
            if self.inline || c.0.elapsed() < RECHECK {
                false
            } else {
                c.0 = std::time::Instant::now();
                let m = std::fs::metadata(&self.path)
                    .and_then(|m| m.modified())
                    .ok();
                let changed = m.is_some() && m != c.1;
                c.1 = m;
                changed
            }
        };
        if changed {
            self.reload();
        }
        self.current
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Seals with the active key, bound to `b`.
    pub fn seal(&self, plain: &[u8], b: &Binding<'_>) -> Vec<u8> {
        self.cipher().seal(plain, b)
    }

    /// Seals text for a text column, bound to `b`.
    pub fn seal_text(&self, plain: &str, b: &Binding<'_>) -> String {
        self.cipher().seal_text(plain, b)
    }

    /// Decrypts; a key this process does not know yet makes it read the key file again once.
    pub fn open(&self, data: &[u8], b: &Binding<'_>) -> Result<Vec<u8>, CryptoError> {
        match self.cipher().open(data, b) {
            Err(CryptoError::UnknownKey(_)) => {
                self.reload();
                self.cipher().open(data, b)
            }
            r => r,
        }
    }

    /// [`Keyring::open`] for a text column.
    pub fn open_text(&self, text: &str, b: &Binding<'_>) -> Result<String, CryptoError> {
        match self.cipher().open_text(text, b) {
            Err(CryptoError::UnknownKey(_)) => {
                self.reload();
                self.cipher().open_text(text, b)
            }
            r => r,
        }
    }

    pub fn blind_index(&self, data: &[u8]) -> String {
        self.cipher().blind_index(data)
    }

    /// See [`Cipher::dedup_index`].
    pub fn dedup_index(&self, key: &str) -> String {
        self.cipher().dedup_index(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(dir: &Path) -> PathBuf {
        let p = dir.join("keys");
        create_key_file(&p).unwrap();
        p
    }

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("huizhen-crypto-{}", crate::message::new_id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const A: Binding<'static> = Binding {
        message: "0190a1b2-0000-7000-8000-00000000000a",
        field: "body",
    };

    #[test]
    fn seal_open_rotate_and_tamper() {
        let d = tmp();
        let p = ring(&d);
        let c1 = Cipher::load(&p, None).unwrap();
        assert_eq!(c1.active(), "k1");
        let name = "张三丰 330523199001011238".as_bytes();
        let sealed = c1.seal(name, &A);
        assert!(!sealed.windows(name.len()).any(|w| w == name));
        assert_ne!(sealed, c1.seal(name, &A), "a fresh nonce each time");
        assert_eq!(c1.open(&sealed, &A).unwrap(), name);
        assert_eq!(Cipher::key_of(&sealed).as_deref(), Some("k1"));
        assert_eq!(c1.open(b"plain", &A).unwrap_err(), CryptoError::Clear);

        let k2 = add_key(&p).unwrap();
        let c2 = Cipher::load(&p, None).unwrap();
        assert_eq!(c2.active(), k2);
        assert_eq!(c2.open(&sealed, &A).unwrap(), name, "old key still opens");
        assert!(!c2.is_current(&sealed));
        let resealed = c2.seal(name, &A);
        assert!(c2.is_current(&resealed));
        assert_eq!(Cipher::key_of(&resealed).as_deref(), Some(k2.as_str()));
        assert_eq!(
            c1.open(&resealed, &A).unwrap_err(),
            CryptoError::UnknownKey(k2.clone())
        );
        assert_eq!(c2.blind_index(name), c1.blind_index(name), "index key kept");
        assert_eq!(c2.dedup_index("MSG001"), c1.dedup_index("MSG001"));
        assert!(c1.dedup_index("MSG001").starts_with(INDEX_PREFIX));
        assert!(!c1.dedup_index("MSG001").contains("MSG001"));

        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(c2.open(&bad, &A).unwrap_err(), CryptoError::Tampered);
        assert_eq!(
            c2.open(&sealed[..10], &A).unwrap_err(),
            CryptoError::Truncated
        );
        let _ = std::fs::remove_dir_all(d);
    }

    /// A sealed value opens only where it was sealed for: another message, another field or
    /// another key id named in its prefix is refused.
    #[test]
    fn sealed_values_are_bound_to_message_field_and_key() {
        let d = tmp();
        let p = ring(&d);
        let c = Cipher::load(&p, None).unwrap();
        let sealed = c.seal(b"patient", &A);
        let other_message = Binding::new("0190a1b2-0000-7000-8000-00000000000b", "body");
        let other_field = Binding::new(A.message, "effect/out");
        assert_eq!(
            c.open(&sealed, &other_message).unwrap_err(),
            CryptoError::Tampered
        );
        assert_eq!(
            c.open(&sealed, &other_field).unwrap_err(),
            CryptoError::Tampered
        );
        // Relabel the key id: with the same key bytes under two ids, only the associated data
        // (which names the key id) tells them apart.
        let same = Cipher::parse(
            &format!(
                "index {}\nk1 {}\nk2 {}\n",
                b64(&[1; 32]),
                b64(&[2; 32]),
                b64(&[2; 32])
            ),
            "keys",
            Some("k1"),
        )
        .unwrap();
        let sealed = same.seal(b"patient", &A);
        let mut relabelled = sealed.clone();
        relabelled[MAGIC.len() + 1..MAGIC.len() + 3].copy_from_slice(b"k2");
        assert_eq!(
            same.open(&relabelled, &A).unwrap_err(),
            CryptoError::Tampered
        );
        assert_eq!(same.open(&sealed, &A).unwrap(), b"patient");
        // The parts are length-prefixed: moving a character from one part to the next differs.
        assert_ne!(
            aad(&Binding::new("ab", "c"), "k"),
            aad(&Binding::new("a", "bc"), "k")
        );
        // Text columns.
        let t = c.seal_text("欧阳明月 refused", &A);
        assert!(t.starts_with(TEXT_PREFIX) && !t.contains("欧阳明月"));
        assert_eq!(c.open_text(&t, &A).unwrap(), "欧阳明月 refused");
        assert_eq!(Cipher::key_of_text(&t).as_deref(), Some("k1"));
        assert_eq!(
            c.open_text(&t, &other_field).unwrap_err(),
            CryptoError::Tampered
        );
        assert_eq!(c.open_text("欧阳明月", &A).unwrap_err(), CryptoError::Clear);
        assert_eq!(c.open_text("hze:!!", &A).unwrap_err(), CryptoError::BadText);
        let _ = std::fs::remove_dir_all(d);
    }

    /// Values sealed before bindings existed (`\0HZE1`, no associated data) still open, and
    /// are not current, so a rotation re-seals them bound.
    #[test]
    fn unbound_values_from_before_still_open_and_are_not_current() {
        use aes_gcm::aead::Aead;
        let d = tmp();
        let p = ring(&d);
        let c = Cipher::load(&p, None).unwrap();
        let nonce = [3u8; 12];
        let ct = c.keys["k1"]
            .encrypt(&Nonce::from(nonce), b"old body".as_slice())
            .unwrap();
        let mut v1 = MAGIC_V1.to_vec();
        v1.push(2);
        v1.extend_from_slice(b"k1");
        v1.extend_from_slice(&nonce);
        v1.extend_from_slice(&ct);
        let before = unbound_opened();
        assert_eq!(c.open(&v1, &A).unwrap(), b"old body");
        assert!(unbound_opened() > before);
        assert!(!c.is_current(&v1), "re-sealed by the next rotation");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn keys_from_the_environment_need_no_file() {
        let d = tmp();
        let cfg = EncryptionConfig {
            keys_file: d.join("never-created"),
            keys: Some(format!("index {};env1 {}", b64(&[7; 32]), b64(&[9; 32])).into()),
            ..EncryptionConfig::default()
        };
        let ring = Keyring::from_config(&cfg).unwrap().unwrap();
        assert_eq!(ring.cipher().active(), "env1");
        let sealed = ring.seal(b"x", &A);
        assert_eq!(ring.open(&sealed, &A).unwrap(), b"x");
        assert!(!d.join("never-created").exists());
        let bad = EncryptionConfig {
            keys: Some("index AAAA".into()),
            ..cfg
        };
        assert!(
            Keyring::from_config(&bad)
                .unwrap_err()
                .contains("security.encryption.keys:1")
        );
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn bad_key_files_name_the_line() {
        let d = tmp();
        let p = d.join("keys");
        std::fs::write(&p, "index AAAA\n").unwrap();
        assert!(Cipher::load(&p, None).unwrap_err().contains("keys:1"));
        std::fs::write(&p, format!("index {}\nk1 not-base64!\n", b64(&[1; 32]))).unwrap();
        assert!(Cipher::load(&p, None).unwrap_err().contains("keys:2"));
        std::fs::write(
            &p,
            format!("index {}\nk1 {}\n", b64(&[1; 32]), b64(&[2; 32])),
        )
        .unwrap();
        assert!(Cipher::load(&p, Some("k9")).unwrap_err().contains("k9"));
        let _ = std::fs::remove_dir_all(d);
    }
}
