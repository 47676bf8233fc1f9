//! Where the keys live, checked at start (issue 12, item 11).
//!
//! The embedded defaults put the SQLite database, the data keys (`data/keys`), the JWT secret
//! (`data/jwt.secret`) and the audit key (`data/audit.key`) in one folder, so a copy of `data/` is everything: the ciphertext
//! and the keys that open it. That is fine for the demo; for a real install the keys belong
//! elsewhere (a secrets store through `${ENV}`, or another disk, see docs/security.md). Two
//! checks:
//! - a key file that the group or others may read is refused (the engine does not start);
//! - with a root config file (anything but the demo), a key file in the database's folder is
//!   warned about at start.

use std::path::{Path, PathBuf};

use crate::config::RootConfig;

/// A key file the engine reads, and what it holds.
fn key_files(root: &RootConfig) -> Vec<(PathBuf, &'static str)> {
    let mut out = Vec::new();
    if root.security.jwt_secret.is_none() {
        out.push((
            root.security.jwt_secret_file.clone(),
            "the JWT signing secret",
        ));
    }
    let enc = &root.security.encryption;
    if enc.enabled && enc.keys.is_none() {
        out.push((enc.keys_file.clone(), "the data keys"));
    }
    out.push((root.security.audit.key_file.clone(), "the audit key"));
    out
}

/// Refuses a key file whose mode lets the group or others read or write it.
pub fn check_private(path: &Path, what: &str) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(format!(
                    "{}: {what} may be read by other users (mode {mode:03o}); run `chmod 600 {}`",
                    path.display(),
                    path.display()
                ));
            }
        }
    }
    let _ = (path, what);
    Ok(())
}

/// The start-up check: an error for a key file others may read, and warnings for key files
/// beside the database in a non-demo config (`demo` = running on the built-in defaults).
pub fn check_layout(root: &RootConfig, demo: bool) -> Result<Vec<String>, String> {
    let files = key_files(root);
    for (path, what) in &files {
        check_private(path, what)?;
    }
    let mut warnings = Vec::new();
    if demo {
        return Ok(warnings);
    }
    let Some(db) = crate::store::sqlite_path(&root.store.url) else {
        return Ok(warnings);
    };
    let folder = |p: &Path| {
        let parent = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf())
    };
    let db_dir = folder(&db);
    for (path, what) in &files {
        if folder(path) == db_dir {
            warnings.push(format!(
                "{} ({what}) is in the database's folder {}: a copy of that folder is the data and the key to it; keep keys elsewhere (docs/security.md, 'Production layout')",
                path.display(),
                db_dir.display()
            ));
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_key_files_are_refused_and_keys_beside_the_database_warned() {
        let dir = std::env::temp_dir().join(format!("huizhen-layout-{}", crate::message::new_id()));
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        let mut root = RootConfig::default();
        root.store.url = format!("sqlite://{}/huizhen.db", dir.display());
        root.security.jwt_secret_file = dir.join("jwt.secret");
        root.security.encryption.keys_file = dir.join("keys/data.keys");
        for f in [
            &root.security.jwt_secret_file,
            &root.security.encryption.keys_file,
        ] {
            crate::security::create_file_once(f, b"x").unwrap();
        }
        // Private files: no error; the JWT secret beside the database is warned about, the data
        // keys in another folder are not, and the demo gets no warning.
        let w = check_layout(&root, false).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("jwt.secret") && w[0].contains("JWT"), "{w:?}");
        assert!(check_layout(&root, true).unwrap().is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                &root.security.encryption.keys_file,
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
            let e = check_layout(&root, true).unwrap_err();
            assert!(e.contains("data.keys") && e.contains("chmod 600"), "{e}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
