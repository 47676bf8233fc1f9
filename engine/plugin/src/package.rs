//! Plugin packages: a folder `NAME-VERSION/` holding `NAME-VERSION.wasm`, its manifest
//! `plugin.toml` (name, version, world and contract version, capabilities, the sha256 of the
//! wasm) and `plugin.toml.sig`, an ed25519 signature of the manifest's bytes by a vendor key the
//! engine trusts (`plugins.trusted_keys`).
//!
//! ```toml
//! name = "expert-score"
//! version = "0.1.0"
//! world = "scorer"
//! contract = "huizhen:plugin@0.1.0"
//! wasm = "expert-score-0.1.0.wasm"
//! sha256 = "9f2c…"
//! capabilities = ["log", "config"]
//! sdk = "0.1.0"
//! ```
//!
//! The signature is checked on the manifest's bytes before anything parses them
//! ([`authenticate`]). A package is refused, with the file and the reason, when its signature
//! is missing (unless `allow_unsigned`), does not verify with any trusted key, or its wasm's
//! sha256 differs from
//! the manifest (changed after signing); when its contract version is not one this engine
//! implements; when the component does not fit its world.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::{CONTRACT, Capability};

/// The manifest's file name in a package folder.
pub const MANIFEST: &str = "plugin.toml";
/// The signature's file name in a package folder.
pub const SIGNATURE: &str = "plugin.toml.sig";

/// The world a plugin targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    Rule,
    Scorer,
    Coverage,
    MatchWeights,
    Triage,
}

impl World {
    pub const ALL: [World; 5] = [
        World::Rule,
        World::Scorer,
        World::Coverage,
        World::MatchWeights,
        World::Triage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            World::Rule => "rule",
            World::Scorer => "scorer",
            World::Coverage => "coverage",
            World::MatchWeights => "match-weights",
            World::Triage => "triage",
        }
    }

    pub fn parse(s: &str) -> Result<World, String> {
        World::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown world {s:?}: expected one of {}",
                    World::ALL.map(|w| w.as_str()).join(", ")
                )
            })
    }
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Capability {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Capability {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Capability::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown capability {s:?}: expected one of {}",
                Capability::ALL.map(|c| c.as_str()).join(", ")
            ))
        })
    }
}

/// `plugin.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub world: World,
    /// The WIT package the plugin was built against: `huizhen:plugin@0.1.0`.
    pub contract: String,
    /// The component's file name, in the package folder.
    pub wasm: String,
    /// Hex SHA-256 of the component.
    pub sha256: String,
    /// What the plugin may do: `log` (`host.log`, stdout/stderr to the log), `clock`
    /// (`host.now-ms`, the WASI clocks), `config` (`host.config`), `random` (real WASI random
    /// numbers). See [`crate::wasi`].
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// The `huizhen-sdk` version stamped into the component, when it was built with the SDK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Manifest {
    /// Parses and checks a manifest; errors name `file:line:column`.
    pub fn parse(file: &Path, text: &str) -> Result<Manifest, String> {
        let m: Manifest = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            format!(
                "{}:{line}:{col}: {}",
                file.display(),
                e.message().trim_end()
            )
        })?;
        m.check().map_err(|e| format!("{}: {e}", file.display()))?;
        Ok(m)
    }

    /// The rules every manifest follows.
    pub fn check(&self) -> Result<(), String> {
        if !valid_name(&self.name) {
            return Err(format!(
                "name {:?}: use lowercase letters, digits and '-' (at most 64)",
                self.name
            ));
        }
        semver::Version::parse(&self.version)
            .map_err(|e| format!("version {:?} is not a semantic version: {e}", self.version))?;
        check_contract(&self.contract)?;
        if self.wasm.is_empty()
            || self.wasm.contains(['/', '\\'])
            || self.wasm.starts_with('.')
            || !self.wasm.ends_with(".wasm")
        {
            return Err(format!(
                "wasm {:?}: a file name in the package folder ending in .wasm",
                self.wasm
            ));
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "sha256 {:?}: 64 hexadecimal digits expected",
                self.sha256
            ));
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a manifest serializes")
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// A contract version this engine implements: same major and minor as [`CONTRACT`] (0.x minors
/// break), patch not newer.
pub fn check_contract(contract: &str) -> Result<(), String> {
    let ours = semver::Version::parse(CONTRACT).expect("CONTRACT is a version");
    let Some(v) = contract.strip_prefix("huizhen:plugin@") else {
        return Err(format!(
            "contract {contract:?}: expected huizhen:plugin@VERSION (this engine implements huizhen:plugin@{CONTRACT})"
        ));
    };
    let theirs = semver::Version::parse(v)
        .map_err(|e| format!("contract {contract:?}: not a version: {e}"))?;
    if theirs.major != ours.major || theirs.minor != ours.minor || theirs.patch > ours.patch {
        return Err(format!(
            "built for huizhen:plugin@{theirs}; this engine implements huizhen:plugin@{CONTRACT} (rebuild the plugin against it)"
        ));
    }
    Ok(())
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The `huizhen-sdk` version the SDK's entry macro stamps into a component (a custom section of
/// that name in the core module).
pub fn sdk_version(wasm: &[u8]) -> Option<String> {
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        if let Ok(wasmparser::Payload::CustomSection(r)) = payload
            && r.name() == "huizhen-sdk"
        {
            return std::str::from_utf8(r.data())
                .ok()
                .map(|s| s.trim_matches(char::from(0)).trim().to_owned());
        }
    }
    None
}

/// The public keys a registry accepts, and whether unsigned packages may load.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    keys: Vec<(String, [u8; 32])>,
    pub allow_unsigned: bool,
}

impl Trust {
    pub fn new(
        keys: impl IntoIterator<Item = (String, String)>,
        allow_unsigned: bool,
    ) -> Result<Trust, String> {
        let mut out = Vec::new();
        for (name, text) in keys {
            let key =
                parse_public_key(&text).map_err(|e| format!("plugins.trusted_keys.{name}: {e}"))?;
            out.push((name, key));
        }
        Ok(Trust {
            keys: out,
            allow_unsigned,
        })
    }

    pub fn from_config(cfg: &huizhen_core::config::PluginsConfig) -> Result<Trust, String> {
        Trust::new(cfg.trusted_keys.clone(), cfg.allow_unsigned)
    }

    /// The names of the trusted keys.
    pub fn key_names(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.0.as_str()).collect()
    }

    /// `sha256:` and the hex SHA-256 of the trusted key `name`'s 32 bytes: what a plugin name
    /// is bound to ([`crate::names`]).
    pub fn fingerprint(&self, name: &str) -> Option<String> {
        self.keys
            .iter()
            .find(|k| k.0 == name)
            .map(|k| format!("sha256:{}", sha256_hex(&k.1)))
    }

    /// The name of the trusted key that made `sig` over `manifest`.
    pub fn verify(&self, manifest: &[u8], sig: &str) -> Result<String, String> {
        let sig = B64
            .decode(sig.trim())
            .map_err(|e| format!("not base64: {e}"))?;
        if sig.len() != 64 {
            return Err(format!(
                "an ed25519 signature has 64 bytes, this one {}",
                sig.len()
            ));
        }
        for (name, key) in &self.keys {
            let k = signature::UnparsedPublicKey::new(&signature::ED25519, key);
            if k.verify(manifest, &sig).is_ok() {
                return Ok(name.clone());
            }
        }
        Err(if self.keys.is_empty() {
            "no key is trusted (plugins.trusted_keys is empty)".to_owned()
        } else {
            format!(
                "does not verify with any trusted key ({}): the manifest was changed after signing, or another key signed it",
                self.keys
                    .iter()
                    .map(|k| k.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }
}

/// A package read from disk, checked, not yet compiled.
#[derive(Debug, Clone)]
pub struct Package {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub wasm: Vec<u8>,
    pub sha256: String,
    /// The trusted key that signed it; `None` when loaded unsigned.
    pub signer: Option<String>,
}

fn read_manifest_bytes(dir: &Path) -> Result<Vec<u8>, String> {
    let mpath = dir.join(MANIFEST);
    std::fs::read(&mpath).map_err(|e| format!("{}: cannot read: {e}", mpath.display()))
}

/// Reads a package folder's manifest bytes and checks their signature, before anything parses
/// them: an unsigned or wrongly signed manifest never reaches the TOML parser. Returns the bytes
/// and the trusted key that signed them (`None`: unsigned, allowed by `allow_unsigned`).
pub fn authenticate(dir: &Path, trust: &Trust) -> Result<(Vec<u8>, Option<String>), String> {
    let bytes = read_manifest_bytes(dir)?;
    let spath = dir.join(SIGNATURE);
    let signer = match std::fs::read_to_string(&spath) {
        Ok(sig) => Some(
            trust
                .verify(&bytes, &sig)
                .map_err(|e| format!("{}: signature refused: {e}", spath.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !trust.allow_unsigned {
                return Err(format!(
                    "{}: missing: unsigned plugins are refused (sign with `huizhen plugin sign`, or set plugins.allow_unsigned: true for development)",
                    spath.display()
                ));
            }
            tracing::warn!(package = %dir.display(), "loading an unsigned plugin (plugins.allow_unsigned)");
            None
        }
        Err(e) => return Err(format!("{}: cannot read: {e}", spath.display())),
    };
    Ok((bytes, signer))
}

/// Reads a package folder (or its `plugin.toml`): signature, then manifest, wasm and its sha256.
pub fn read_package(path: &Path, trust: &Trust) -> Result<Package, String> {
    read(path, Some(trust))
}

fn read(path: &Path, trust: Option<&Trust>) -> Result<Package, String> {
    let dir = if path.is_dir() {
        path.to_owned()
    } else if path.file_name().is_some_and(|n| n == MANIFEST) {
        path.parent().unwrap_or(Path::new(".")).to_owned()
    } else {
        return Err(format!(
            "{}: not a plugin package (a folder with {MANIFEST}, {SIGNATURE} and the .wasm)",
            path.display()
        ));
    };
    let (bytes, signer) = match trust {
        Some(trust) => authenticate(&dir, trust)?,
        None => (read_manifest_bytes(&dir)?, None),
    };
    // Parsed only now: the bytes of a signed package are the vendor's own.
    let mpath = dir.join(MANIFEST);
    let text =
        std::str::from_utf8(&bytes).map_err(|e| format!("{}: not UTF-8: {e}", mpath.display()))?;
    let manifest = Manifest::parse(&mpath, text)?;
    let wpath = dir.join(&manifest.wasm);
    let wasm =
        std::fs::read(&wpath).map_err(|e| format!("{}: cannot read: {e}", wpath.display()))?;
    let sha256 = sha256_hex(&wasm);
    if !sha256.eq_ignore_ascii_case(&manifest.sha256) {
        return Err(format!(
            "{}: sha256 is {sha256}, the manifest says {}: the file was changed after the package was built and signed",
            wpath.display(),
            manifest.sha256
        ));
    }
    Ok(Package {
        dir,
        manifest,
        wasm,
        sha256,
        signer,
    })
}

/// Reads a package without looking at its signature (`huizhen plugin test` before signing):
/// the manifest, the wasm and its sha256 are still checked.
pub fn read_unverified(path: &Path) -> Result<Package, String> {
    read(path, None)
}

/// A bare component (no manifest), for development: named after its file, version
/// `0.0.0-dev`, every capability. Only with `allow_unsigned`.
pub fn read_bare(path: &Path, world: World, trust: &Trust) -> Result<Package, String> {
    if !trust.allow_unsigned {
        return Err(format!(
            "{}: a bare component has no signed manifest; build a package (`huizhen plugin build`) or set plugins.allow_unsigned: true for development",
            path.display()
        ));
    }
    let wasm = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let sha256 = sha256_hex(&wasm);
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().replace('_', "-").to_lowercase())
        .unwrap_or_else(|| "plugin".into());
    let manifest = Manifest {
        name: stem,
        version: "0.0.0-dev".into(),
        world,
        contract: format!("huizhen:plugin@{CONTRACT}"),
        wasm: path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha256: sha256.clone(),
        capabilities: Capability::ALL.to_vec(),
        sdk: sdk_version(&wasm),
        description: None,
    };
    Ok(Package {
        dir: path.parent().unwrap_or(Path::new(".")).to_owned(),
        manifest,
        wasm,
        sha256,
        signer: None,
    })
}

/// A new ed25519 key: the private key as PKCS#8 PEM, the public key as base64.
pub fn generate_key() -> (String, String) {
    let rng = ring::rand::SystemRandom::new();
    let doc = Ed25519KeyPair::generate_pkcs8(&rng).expect("the system random source");
    let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("a key ring just made");
    let pem = pem_wrap("PRIVATE KEY", doc.as_ref());
    (pem, B64.encode(pair.public_key().as_ref()))
}

fn pem_wrap(label: &str, der: &[u8]) -> String {
    let b = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn pem_body(text: &str, label: &str) -> Option<Result<Vec<u8>, String>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = text[start..].find(&end)? + start;
    let b: String = text[start..stop].split_whitespace().collect();
    Some(
        B64.decode(b)
            .map_err(|e| format!("PEM body is not base64: {e}")),
    )
}

/// An ed25519 private key: PKCS#8 PEM (`huizhen plugin keygen`, or `openssl genpkey -algorithm
/// ed25519`).
pub fn parse_private_key(text: &str) -> Result<Ed25519KeyPair, String> {
    let der = pem_body(text, "PRIVATE KEY").ok_or(
        "expected a PEM \"PRIVATE KEY\" (PKCS#8 ed25519; `huizhen plugin keygen` makes one)",
    )??;
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|e| format!("not a PKCS#8 ed25519 private key: {e}"))
}

/// An ed25519 public key: base64 (or hex) of its 32 bytes, or a PEM `PUBLIC KEY`.
pub fn parse_public_key(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    let bytes = if let Some(der) = pem_body(text, "PUBLIC KEY") {
        let der = der?;
        // SubjectPublicKeyInfo of Ed25519: 12 fixed bytes, then the key.
        const PREFIX: [u8; 12] = [
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        if der.len() != 44 || der[..12] != PREFIX {
            return Err("the PEM public key is not an ed25519 key".into());
        }
        der[12..].to_vec()
    } else if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|e| e.to_string())?
    } else {
        B64.decode(text)
            .map_err(|e| format!("not base64, hex or PEM: {e}"))?
    };
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("an ed25519 public key has 32 bytes, this one {}", b.len()))
}

/// The public key of a private key, as base64.
pub fn public_key_of(pair: &Ed25519KeyPair) -> String {
    B64.encode(pair.public_key().as_ref())
}

/// Signs a package folder's manifest; writes and returns the signature file's path.
pub fn sign_package(dir: &Path, key: &Ed25519KeyPair) -> Result<PathBuf, String> {
    let mpath = dir.join(MANIFEST);
    let bytes =
        std::fs::read(&mpath).map_err(|e| format!("{}: cannot read: {e}", mpath.display()))?;
    let text =
        std::str::from_utf8(&bytes).map_err(|e| format!("{}: not UTF-8: {e}", mpath.display()))?;
    // Shape only: a vendor may sign for a contract version this engine does not implement.
    let manifest: Manifest =
        toml::from_str(text).map_err(|e| format!("{}: {}", mpath.display(), e.message()))?;
    if manifest.wasm.contains(['/', '\\']) {
        return Err(format!("{}: wasm must be a file name", mpath.display()));
    }
    let wpath = dir.join(&manifest.wasm);
    let wasm =
        std::fs::read(&wpath).map_err(|e| format!("{}: cannot read: {e}", wpath.display()))?;
    if sha256_hex(&wasm) != manifest.sha256.to_ascii_lowercase() {
        return Err(format!(
            "{}: its sha256 differs from the manifest's; rebuild the package before signing",
            wpath.display()
        ));
    }
    let sig = B64.encode(key.sign(&bytes).as_ref());
    let spath = dir.join(SIGNATURE);
    std::fs::write(&spath, format!("{sig}\n"))
        .map_err(|e| format!("{}: cannot write: {e}", spath.display()))?;
    Ok(spath)
}

/// Writes a package folder `out/NAME-VERSION/` from a component; returns the folder.
pub fn write_package(
    out: &Path,
    wasm: &[u8],
    name: &str,
    version: &str,
    world: World,
    capabilities: Vec<Capability>,
    description: Option<String>,
) -> Result<(PathBuf, Manifest), String> {
    let file = format!("{name}-{version}.wasm");
    let manifest = Manifest {
        name: name.to_owned(),
        version: version.to_owned(),
        world,
        contract: format!("huizhen:plugin@{CONTRACT}"),
        wasm: file.clone(),
        sha256: sha256_hex(wasm),
        capabilities,
        sdk: sdk_version(wasm),
        description,
    };
    manifest.check()?;
    let dir = out.join(format!("{name}-{version}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(dir.join(&file), wasm).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(dir.join(MANIFEST), manifest.to_toml())
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    // A stale signature would refuse the new manifest: remove it; sign again.
    let _ = std::fs::remove_file(dir.join(SIGNATURE));
    Ok((dir, manifest))
}

/// `wasm` with a custom section `name` holding `data` appended: the same component with other
/// bytes, so another sha256 (what the benchmarks use as "a new version" to compile).
pub fn with_custom_section(wasm: &[u8], name: &str, data: &[u8]) -> Vec<u8> {
    fn leb(out: &mut Vec<u8>, mut n: usize) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut body = Vec::with_capacity(5 + name.len() + data.len());
    leb(&mut body, name.len());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(data);
    let mut out = wasm.to_vec();
    out.push(0);
    leb(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contracts_of_this_minor_are_accepted() {
        assert!(check_contract("huizhen:plugin@0.1.0").is_ok());
        let e = check_contract("huizhen:plugin@0.2.0").unwrap_err();
        assert!(e.contains("built for huizhen:plugin@0.2.0"), "{e}");
        assert!(check_contract("huizhen:plugin@0.1.9").is_err());
        assert!(check_contract("other:plugin@0.1.0").is_err());
    }

    #[test]
    fn a_bad_manifest_names_line_and_column() {
        let text = "name = \"x\"\nversion = \"0.1.0\"\nworld = \"scorrer\"\n";
        let e = Manifest::parse(Path::new("p/plugin.toml"), text).unwrap_err();
        assert!(e.starts_with("p/plugin.toml:3:9: "), "{e}");
        assert!(e.contains("scorrer"), "{e}");
    }

    #[test]
    fn signatures_verify_with_the_signer_only() {
        let (pem, public) = generate_key();
        let pair = parse_private_key(&pem).unwrap();
        assert_eq!(public_key_of(&pair), public);
        let (_, other) = generate_key();
        let trust = Trust::new(
            [
                ("acme".to_owned(), public),
                ("other".to_owned(), other.clone()),
            ],
            false,
        )
        .unwrap();
        let sig = B64.encode(pair.sign(b"manifest").as_ref());
        assert_eq!(trust.verify(b"manifest", &sig).unwrap(), "acme");
        let e = trust.verify(b"manifest!", &sig).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        let only_other = Trust::new([("other".to_owned(), other)], false).unwrap();
        assert!(only_other.verify(b"manifest", &sig).is_err());
    }

    #[test]
    fn public_keys_in_pem_hex_and_base64() {
        let (pem, public) = generate_key();
        let pair = parse_private_key(&pem).unwrap();
        let raw = pair.public_key().as_ref().to_vec();
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(&raw);
        let pem_pub = pem_wrap("PUBLIC KEY", &spki);
        assert_eq!(parse_public_key(&pem_pub).unwrap().to_vec(), raw);
        assert_eq!(parse_public_key(&hex::encode(&raw)).unwrap().to_vec(), raw);
        assert_eq!(parse_public_key(&public).unwrap().to_vec(), raw);
        assert!(parse_public_key("AAAA").is_err());
    }
}
