//! Secrets and keys: the HS256 secret file, the JWKS file, API keys and token issuing.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use sha2::{Digest, Sha256};

use super::{Claims, Role, SecurityConfig};

/// Reads (or creates) the HS256 secret.
pub fn load_secret(cfg: &SecurityConfig) -> Result<Vec<u8>, String> {
    if let Some(s) = &cfg.jwt_secret {
        let s = s.expose();
        if s.len() < 32 {
            return Err("security.jwt_secret: must be at least 32 bytes".into());
        }
        return Ok(s.as_bytes().to_vec());
    }
    let path = &cfg.jwt_secret_file;
    super::check_private(path, "the JWT signing secret")?;
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let s = s.trim();
            if s.len() < 32 {
                return Err(format!(
                    "{}: the JWT secret must be at least 32 bytes",
                    path.display()
                ));
            }
            Ok(s.as_bytes().to_vec())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_secret(path),
        Err(e) => Err(format!(
            "{}: cannot read the JWT secret: {e}",
            path.display()
        )),
    }
}

fn create_secret(path: &Path) -> Result<Vec<u8>, String> {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    let created = create_file_once(path, secret.as_bytes())
        .map_err(|e| format!("{}: cannot create the JWT secret: {e}", path.display()))?;
    if created {
        tracing::info!(file = %path.display(), "created a new JWT signing secret");
        return Ok(secret.into_bytes());
    }
    // Another process (a second node starting at the same moment) created it first.
    std::fs::read_to_string(path)
        .map(|s| s.trim().as_bytes().to_vec())
        .map_err(|e| format!("{}: cannot read the JWT secret: {e}", path.display()))
}

/// Creates `path` (mode 0600) with `content`, atomically: the content is written to a temporary
/// file that is then hard-linked into place, so a process starting at the same moment sees
/// either no file or the whole file. `Ok(false)` when the file already exists (the caller
/// reads it).
pub(crate) fn create_file_once(path: &Path, content: &[u8]) -> std::io::Result<bool> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!(
        "tmp-{}-{}",
        std::process::id(),
        &crate::message::new_id()[28..]
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let written = opts.open(&tmp).and_then(|mut f| {
        f.write_all(content)?;
        f.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

pub(super) fn load_jwks(
    path: &Path,
) -> Result<Vec<(Option<String>, Algorithm, DecodingKey)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the JWKS: {e}", path.display()))?;
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}:{}:{}: not a JWKS: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    let mut out = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let alg = match &jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
            _ => {
                return Err(format!(
                    "{}: key {i}: only RSA (RS256) and EC P-256 (ES256) keys are supported",
                    path.display()
                ));
            }
        };
        let key =
            DecodingKey::from_jwk(jwk).map_err(|e| format!("{}: key {i}: {e}", path.display()))?;
        out.push((jwk.common.key_id.clone(), alg, key));
    }
    if out.is_empty() {
        return Err(format!("{}: the JWKS has no keys", path.display()));
    }
    Ok(out)
}

/// A new API key: the token to give to the sender once, and the row to store.
pub fn new_api_key(
    sub: &str,
    role: Role,
    facility: &str,
) -> (String, crate::store::audit::ApiKeyRow) {
    use rand::RngCore;
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = hex::encode(secret);
    let token = format!("hzk_{id}_{secret}");
    let row = crate::store::audit::ApiKeyRow {
        id,
        hash: hex::encode(Sha256::digest(secret.as_bytes())),
        sub: sub.to_owned(),
        role: role.as_str().to_owned(),
        facility: facility.to_owned(),
        created_at: crate::message::now_ms(),
        revoked_at: None,
    };
    (token, row)
}

/// Compares two byte strings in time that does not depend on where they differ.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A token just issued, with what the audit trail records of it.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    /// The `jti` claim.
    pub id: String,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
}

/// Signs an HS256 token.
pub fn issue_with(
    key: &EncodingKey,
    sub: &str,
    role: Role,
    facility: &str,
    ttl: Duration,
    issuer: Option<&str>,
) -> Result<Issued, String> {
    if sub.trim().is_empty() {
        return Err("the subject (--sub) must not be empty".into());
    }
    if facility.trim().is_empty() {
        return Err("the facility (--facility) must not be empty; `*` means every facility".into());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = Claims {
        sub: sub.to_owned(),
        role: role.as_str().to_owned(),
        facility: facility.to_owned(),
        exp: now + ttl.as_secs().max(1),
        iat: now,
        iss: issuer.map(str::to_owned),
        nbf: None,
        jti: Some(crate::message::new_id()),
    };
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
        .map_err(|e| e.to_string())?;
    Ok(Issued {
        token,
        id: claims.jti.unwrap_or_default(),
        expires_at: claims.exp,
    })
}

/// Issues an HS256 token from the config alone (the CLI), within `security.max_token_ttl`.
pub fn issue_from_config(
    cfg: &SecurityConfig,
    sub: &str,
    role: Role,
    facility: &str,
    ttl: Duration,
) -> Result<Issued, String> {
    if !cfg.hs256 {
        return Err(
            "HS256 tokens are switched off (security.hs256: false); the identity provider issues tokens"
                .into(),
        );
    }
    if ttl > cfg.max_token_ttl {
        return Err(format!(
            "a token may live at most {} (security.max_token_ttl), not {}",
            humantime::format_duration(cfg.max_token_ttl),
            humantime::format_duration(ttl)
        ));
    }
    let secret = load_secret(cfg)?;
    issue_with(
        &EncodingKey::from_secret(&secret),
        sub,
        role,
        facility,
        ttl,
        cfg.issuer.as_deref(),
    )
}
