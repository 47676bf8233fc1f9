//! Encryption at rest of what carries patient data: message bodies and effect bodies.
//!
//! AES-256-GCM (RustCrypto `aes-gcm`) with a key ring: every ciphertext names the key it was
//! sealed with, so keys can be rotated online (`huizhen keys rotate` re-encrypts in batches) and
//! old ones retired once nothing uses them. Equality on sealed data goes through a keyed HMAC
//! blind index (the dedup hash of a body), never a bare SHA-256, which a dictionary of likely
//! bodies would reverse. Everything is behind [`Cipher`] so SM4-GCM / SM3-HMAC can replace it
//! (STANDARDS CN-31) without touching the callers.
//!
//! Format of a sealed value: `\0HZE1`, one byte with the length of the key id, the key id, a
//! 12-byte random nonce, then the ciphertext and its 16-byte tag. A value without the prefix is
//! plaintext (written before encryption was turned on) and is returned as it is.
//!
//! The key file (`security.encryption.keys_file`, default `data/keys`, created mode 0600 on first
//! start when missing) has one key per line, `ID BASE64` (32 bytes); the line `index BASE64`
//! holds the blind-index key, which is never rotated. The active key is
//! `security.encryption.active`, or the last key of the file.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;

const MAGIC: &[u8] = b"\0HZE1";

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
    #[error("cannot decrypt (wrong key, or the data was changed)")]
    Tampered,
    #[error("truncated sealed value")]
    Truncated,
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

    /// Encrypts with the active key.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        use rand::RngCore;
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let cipher = &self.keys[&self.active];
        // Encryption with a valid key and a 12-byte nonce does not fail.
        let ct = cipher
            .encrypt(&Nonce::from(nonce), plain)
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

    /// Decrypts a sealed value; a plaintext value is returned as it is.
    pub fn open<'a>(&self, data: &'a [u8]) -> Result<Cow<'a, [u8]>, CryptoError> {
        let Some(rest) = data.strip_prefix(MAGIC) else {
            return Ok(Cow::Borrowed(data));
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
        cipher
            .decrypt(&Nonce::from(nonce), ct)
            .map(Cow::Owned)
            .map_err(|_| CryptoError::Tampered)
    }

    /// The key id a value was sealed with; `None` for plaintext.
    pub fn key_of(data: &[u8]) -> Option<String> {
        let rest = data.strip_prefix(MAGIC)?;
        let (&len, rest) = rest.split_first()?;
        rest.get(..len as usize)
            .map(|id| String::from_utf8_lossy(id).into_owned())
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

    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        self.cipher().seal(plain)
    }

    /// Decrypts; a key this process does not know yet makes it read the key file again once.
    pub fn open(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match self.cipher().open(data) {
            Ok(p) => Ok(p.into_owned()),
            Err(CryptoError::UnknownKey(_)) => {
                self.reload();
                self.cipher().open(data).map(Cow::into_owned)
            }
            Err(e) => Err(e),
        }
    }

    pub fn blind_index(&self, data: &[u8]) -> String {
        self.cipher().blind_index(data)
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

    #[test]
    fn seal_open_rotate_and_tamper() {
        let d = tmp();
        let p = ring(&d);
        let c1 = Cipher::load(&p, None).unwrap();
        assert_eq!(c1.active(), "k1");
        let name = "张三丰 330523199001011238".as_bytes();
        let sealed = c1.seal(name);
        assert!(!sealed.windows(name.len()).any(|w| w == name));
        assert_ne!(sealed, c1.seal(name), "a fresh nonce each time");
        assert_eq!(c1.open(&sealed).unwrap().as_ref(), name);
        assert_eq!(Cipher::key_of(&sealed).as_deref(), Some("k1"));
        assert_eq!(c1.open(b"plain").unwrap().as_ref(), b"plain");

        let k2 = add_key(&p).unwrap();
        let c2 = Cipher::load(&p, None).unwrap();
        assert_eq!(c2.active(), k2);
        assert_eq!(
            c2.open(&sealed).unwrap().as_ref(),
            name,
            "old key still opens"
        );
        let resealed = c2.seal(name);
        assert_eq!(Cipher::key_of(&resealed).as_deref(), Some(k2.as_str()));
        assert_eq!(
            c1.open(&resealed).unwrap_err(),
            CryptoError::UnknownKey(k2.clone())
        );
        assert_eq!(c2.blind_index(name), c1.blind_index(name), "index key kept");

        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(c2.open(&bad).unwrap_err(), CryptoError::Tampered);
        assert_eq!(c2.open(&sealed[..10]).unwrap_err(), CryptoError::Truncated);
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
        let sealed = ring.seal(b"x");
        assert_eq!(ring.open(&sealed).unwrap(), b"x");
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
