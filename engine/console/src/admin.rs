//! The console's first administrator: on the first start with no users, the user `admin` (role
//! admin, every facility) with a random password, written to `console.initial_admin_file`
//! (mode 0600) and never logged. Until it is changed, the console shows a banner asking for it.

use std::io::Write;
use std::path::{Path, PathBuf};

use huizhen_core::config::ConsoleConfig;
use huizhen_core::store::Store;
use huizhen_core::store::users::UserRow;

use crate::password;

/// The first administrator's name.
pub const ADMIN: &str = "admin";

/// What the first start did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstStart {
    /// There are users already (or the console or the creation is switched off).
    Nothing,
    /// `admin` was created; its password is in the file.
    Created(PathBuf),
}

/// Creates `admin` when the store has no users (see the module docs).
pub async fn ensure_admin(store: &Store, cfg: &ConsoleConfig) -> Result<FirstStart, String> {
    if !cfg.enabled || !cfg.create_admin {
        return Ok(FirstStart::Nothing);
    }
    let n = store
        .user_count()
        .await
        .map_err(|e| format!("cannot count the console's users: {e}"))?;
    if n > 0 {
        return Ok(FirstStart::Nothing);
    }
    let secret = password::generate();
    let hash = tokio::task::spawn_blocking({
        let secret = secret.clone();
        move || password::hash(&secret)
    })
    .await
    .map_err(|e| format!("argon2: {e}"))??;
    write_private(&cfg.initial_admin_file, &format!("{secret}\n"))?;
    let mut user = UserRow::new(ADMIN, "admin", "*", hash);
    user.display_name = "Administrator".into();
    user.must_change = true;
    store
        .create_user(&user)
        .await
        .map_err(|e| format!("cannot create the console's first user: {e}"))?;
    Ok(FirstStart::Created(cfg.initial_admin_file.clone()))
}

/// Writes a file only its owner may read (replacing one that is there).
pub fn write_private(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = f.set_permissions(std::fs::Permissions::from_mode(0o600));
    }
    f.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
