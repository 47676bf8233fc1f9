//! Name binding: each plugin name belongs to the trusted key that first signed it, so another
//! trusted vendor cannot take a name over by publishing a higher version of it.
//!
//! The bindings live in a small TOML file the registry owns, `names.toml` in `plugins.dir`
//! (or `plugins.names_file`):
//!
//! ```toml
//! [names.route-by-facility]
//! key = "acme"                                   # its name in plugins.trusted_keys then
//! fingerprint = "sha256:5b0c…"                   # SHA-256 of the key's 32 bytes: this decides
//! bound_at = "2026-12-04T20:31:42Z"
//! ```
//!
//! The first time the engine admits a signed package of a name with no binding, it binds the
//! name to the signer's key and writes the file (atomically: a temporary file renamed) before
//! the package is loaded; a binding that cannot be written refuses the package. A package of a
//! bound name signed by another key is refused with both keys named, and the version serving
//! stays; so is an unsigned package of a bound name (`allow_unsigned`). The fingerprint, not
//! the key's name, decides: renaming a key in the configuration, or pointing its name at
//! another key, changes nothing. An operator moves a name to another key with
//! `huizhen plugin bind NAME KEY` (or frees it with `huizhen plugin unbind NAME`); the engine
//! reads the file at every load, so the next reload sees the change. A file that cannot be read
//! or parsed refuses every package until it is fixed (fail closed).
//!
//! Limits: whoever can write the file (or `plugins.dir`) can change the bindings; the file
//! defends names against a trusted vendor's key, not against the host's own users.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::package::Trust;

/// The file's name in `plugins.dir` when `plugins.names_file` is not set.
pub const FILE: &str = "names.toml";

const HEADER: &str = "# Which trusted key owns each plugin name: written by the engine when it first loads a signed\n# package of a name. Change it with `huizhen plugin bind NAME KEY` or `huizhen plugin unbind NAME`\n# (docs/plugins.md, \"Name binding\").\n";

/// The key a name is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// The key's name in `plugins.trusted_keys` when the name was bound (for people: the
    /// fingerprint decides).
    pub key: String,
    /// `sha256:` and the hex SHA-256 of the key's 32 bytes.
    pub fingerprint: String,
    /// When the name was bound (RFC 3339).
    pub bound_at: String,
}

/// The file's contents.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamesFile {
    /// Plugin name → its binding.
    #[serde(default)]
    names: BTreeMap<String, Binding>,
}

/// The name bindings of one registry (one file).
#[derive(Debug)]
pub struct Names {
    path: PathBuf,
    /// Serialises this process's read-check-write of the file.
    lock: Mutex<()>,
}

impl Names {
    pub fn new(path: PathBuf) -> Names {
        Names {
            path,
            lock: Mutex::new(()),
        }
    }

    /// The file of a configuration: `plugins.names_file`, or `names.toml` in `plugins.dir`.
    pub fn for_config(cfg: &huizhen_core::config::PluginsConfig) -> Names {
        Names::new(cfg.names_file.clone().unwrap_or_else(|| cfg.dir.join(FILE)))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every binding (none when the file does not exist).
    pub fn read(&self) -> Result<BTreeMap<String, Binding>, String> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(format!("{}: cannot read: {e}", self.path.display())),
        };
        let file: NamesFile = toml::from_str(&text).map_err(|e| {
            let line = e.span().map_or(1, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            format!(
                "{}:{line}: {} (fix it, or bind names again with `huizhen plugin bind`)",
                self.path.display(),
                e.message().trim_end()
            )
        })?;
        Ok(file.names)
    }

    fn write(&self, names: BTreeMap<String, Binding>) -> Result<(), String> {
        let text = toml::to_string(&NamesFile { names })
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let tmp = self.path.with_extension("toml.tmp");
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&tmp, format!("{HEADER}{text}"))?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!(
                "{}: cannot write the plugin name bindings: {e} (set plugins.names_file to a writable file)",
                self.path.display()
            )
        })
    }

    /// Admits a package of `name` signed by the trusted key `signer` (`None`: unsigned, loaded
    /// with `allow_unsigned`): binds an unbound name to a signer, refuses a package whose
    /// signer is not the key the name is bound to. `origin` names the package in errors.
    pub fn admit(
        &self,
        name: &str,
        signer: Option<&str>,
        trust: &Trust,
        origin: &Path,
    ) -> Result<(), String> {
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut names = self.read_for(origin)?;
        if let Some(binding) = judge(&names, name, signer, trust, origin)? {
            let (key, fingerprint) = (binding.key.clone(), binding.fingerprint.clone());
            names.insert(name.to_owned(), binding);
            self.write(names)
                .map_err(|e| format!("{}: refused: {e}", origin.display()))?;
            tracing::info!(plugin = %name, key, %fingerprint, file = %self.path.display(), "plugin name bound to the key that first signed it");
        }
        Ok(())
    }

    /// What [`Names::admit`] would answer, without binding anything (`huizhen plugin verify`).
    pub fn check(
        &self,
        name: &str,
        signer: Option<&str>,
        trust: &Trust,
        origin: &Path,
    ) -> Result<(), String> {
        judge(&self.read_for(origin)?, name, signer, trust, origin).map(|_| ())
    }

    fn read_for(&self, origin: &Path) -> Result<BTreeMap<String, Binding>, String> {
        self.read().map_err(|e| {
            format!(
                "{}: refused: the plugin name bindings cannot be read: {e}",
                origin.display()
            )
        })
    }

    /// Binds `name` to the trusted key `key` (an operator's decision); returns the binding it
    /// replaces.
    pub fn bind(&self, name: &str, key: &str, trust: &Trust) -> Result<Option<Binding>, String> {
        let fingerprint = trust.fingerprint(key).ok_or_else(|| {
            format!(
                "no trusted key `{key}` in plugins.trusted_keys (trusted: {})",
                trust.key_names().join(", ")
            )
        })?;
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut names = self.read()?;
        let old = names.insert(
            name.to_owned(),
            Binding {
                key: key.to_owned(),
                fingerprint,
                bound_at: now(),
            },
        );
        self.write(names)?;
        Ok(old)
    }

    /// Frees `name`: the next signed package of it binds it again. Returns the old binding.
    pub fn unbind(&self, name: &str) -> Result<Option<Binding>, String> {
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut names = self.read()?;
        let old = names.remove(name);
        if old.is_some() {
            self.write(names)?;
        }
        Ok(old)
    }
}

/// Whether a package of `name` signed by `signer` may load under these bindings; `Some` when
/// it may and its name is to be bound now.
fn judge(
    names: &BTreeMap<String, Binding>,
    name: &str,
    signer: Option<&str>,
    trust: &Trust,
    origin: &Path,
) -> Result<Option<Binding>, String> {
    let signed = signer.map(|k| (k, trust.fingerprint(k)));
    match (names.get(name), signed) {
        (None, None) => Ok(None),
        (_, Some((key, None))) => Err(format!(
            "{}: signed by `{key}`, a key that is not trusted",
            origin.display()
        )),
        (None, Some((key, Some(fingerprint)))) => Ok(Some(Binding {
            key: key.to_owned(),
            fingerprint,
            bound_at: now(),
        })),
        (Some(b), Some((_, Some(fingerprint)))) if b.fingerprint == fingerprint => Ok(None),
        (Some(b), Some((key, Some(fingerprint)))) => Err(format!(
            "{}: plugin {name} belongs to the key that first signed it (`{}`, {}), and this package is signed by `{key}` ({}): another vendor cannot take over a plugin name; if the change is intended, an operator re-binds it with `huizhen plugin bind {name} {key}`",
            origin.display(),
            b.key,
            short(&b.fingerprint),
            short(&fingerprint)
        )),
        (Some(b), None) => Err(format!(
            "{}: plugin {name} belongs to the key `{}` ({}); an unsigned package cannot replace it (sign it, or free the name with `huizhen plugin unbind {name}`)",
            origin.display(),
            b.key,
            short(&b.fingerprint)
        )),
    }
}

/// A fingerprint shortened for messages: `sha256:` and 16 hex digits.
pub fn short(fingerprint: &str) -> &str {
    &fingerprint[..fingerprint.len().min("sha256:".len() + 16)]
}

/// The time of a binding: RFC 3339 in seconds, UTC.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust() -> Trust {
        let (_, a) = crate::package::generate_key();
        let (_, b) = crate::package::generate_key();
        Trust::new([("acme".to_owned(), a), ("other".to_owned(), b)], true).unwrap()
    }

    #[test]
    fn a_name_stays_with_its_first_key_until_an_operator_rebinds_it() {
        let dir = std::env::temp_dir().join(format!("hz-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let names = Names::new(dir.join("names.toml"));
        let t = trust();
        let pkg = Path::new("dist/x-1.0.0");
        names.check("x", Some("other"), &t, pkg).unwrap();
        assert!(names.read().unwrap().is_empty(), "a check binds nothing");
        names.admit("x", Some("acme"), &t, pkg).unwrap();
        assert!(names.check("x", Some("other"), &t, pkg).is_err());
        names.admit("x", Some("acme"), &t, pkg).unwrap();
        let e = names.admit("x", Some("other"), &t, pkg).unwrap_err();
        assert!(
            e.contains("plugin x belongs to the key that first signed it (`acme`")
                && e.contains("signed by `other`")
                && e.contains("huizhen plugin bind x other"),
            "{e}"
        );
        let e = names.admit("x", None, &t, pkg).unwrap_err();
        assert!(e.contains("an unsigned package cannot replace it"), "{e}");
        // Unsigned packages of a free name bind nothing.
        names.admit("y", None, &t, pkg).unwrap();
        assert!(!names.read().unwrap().contains_key("y"));
        // Durable: a new handle on the same file sees the binding.
        let again = Names::new(dir.join("names.toml"));
        assert_eq!(again.read().unwrap()["x"].key, "acme");
        assert!(again.admit("x", Some("other"), &t, pkg).is_err());
        // The operator moves it.
        let old = again.bind("x", "other", &t).unwrap().unwrap();
        assert_eq!(old.key, "acme");
        names.admit("x", Some("other"), &t, pkg).unwrap();
        assert!(names.admit("x", Some("acme"), &t, pkg).is_err());
        assert!(
            names
                .bind("x", "nobody", &t)
                .unwrap_err()
                .contains("acme, other")
        );
        assert!(names.unbind("x").unwrap().is_some());
        names.admit("x", Some("acme"), &t, pkg).unwrap();
        // A damaged file refuses everything, naming the file.
        std::fs::write(dir.join("names.toml"), "names = 3\n").unwrap();
        let e = names.admit("x", Some("acme"), &t, pkg).unwrap_err();
        assert!(e.contains("names.toml:1"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
