//! The console's people and sessions (issue 21, migration 0029): local users, the sessions of
//! the web console, and the OIDC logins under way. What a password hash, a TOTP code or a
//! lockout means is decided in [`crate::security::login`]; this module only keeps the rows.
//!
//! A user's TOTP secret is sealed with the data key when encryption is on (bound to the user
//! name, field `user/totp`), and `huizhen keys rotate` re-seals it (`users` is one of
//! [`super::rekey::REKEY_TABLES`]). A session keeps only the SHA-256 of its cookie's token.

use sqlx::Row;

use super::sql::Sql;
use super::{Result, Store, StoreError, q};
use crate::message::now_ms;

/// The binding field of a sealed TOTP secret.
pub const TOTP_FIELD: &str = "user/totp";

/// A local user as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserRow {
    pub username: String,
    /// The argon2id hash in PHC form; empty when no password was ever set (cannot log in).
    #[serde(skip)]
    pub password_hash: String,
    /// The base32 TOTP secret (opened); empty when none was enrolled.
    #[serde(skip)]
    pub totp_secret: String,
    /// The second factor is confirmed and required at login.
    pub totp_enabled: bool,
    /// The last TOTP time step accepted (a code is never accepted twice).
    #[serde(skip)]
    pub totp_last_step: i64,
    pub role: String,
    pub facility: String,
    pub display_name: String,
    /// Failed logins since the last success or lockout.
    pub failed: i64,
    /// Unix ms until which logins are refused (0: not locked).
    pub locked_until: i64,
    pub disabled: bool,
    /// The password was set by someone else (first start, an admin): change it at next login.
    pub must_change: bool,
    pub created_at: i64,
    pub password_changed_at: i64,
    pub last_login_at: i64,
}

impl UserRow {
    /// A new enabled user without a second factor.
    pub fn new(username: &str, role: &str, facility: &str, password_hash: String) -> UserRow {
        let now = now_ms();
        UserRow {
            username: username.to_owned(),
            password_hash,
            totp_secret: String::new(),
            totp_enabled: false,
            totp_last_step: 0,
            role: role.to_owned(),
            facility: facility.to_owned(),
            display_name: String::new(),
            failed: 0,
            locked_until: 0,
            disabled: false,
            must_change: false,
            created_at: now,
            password_changed_at: now,
            last_login_at: 0,
        }
    }
}

/// A console session as stored (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// SHA-256 (hex) of the cookie's token.
    pub token_hash: String,
    pub username: String,
    pub role: String,
    pub facility: String,
    /// `password`, `password+totp` or `oidc`.
    pub method: String,
    /// The token the console sends back in `X-CSRF-Token` on every change.
    pub csrf: String,
    pub created_at: i64,
    pub last_seen: i64,
    /// The absolute end, whatever the activity.
    pub expires_at: i64,
}

/// An OIDC login under way: what the callback checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcLogin {
    pub state: String,
    /// The PKCE code verifier (RFC 7636).
    pub verifier: String,
    pub nonce: String,
    /// The console page to return to.
    pub return_to: String,
    pub created_at: i64,
}

const USER_COLUMNS: &str = "username, password_hash, totp_secret, totp_enabled, totp_last_step, role, facility, display_name, failed, locked_until, disabled, must_change, created_at, password_changed_at, last_login_at";

impl Store {
    fn seal_totp(&self, username: &str, secret: &str) -> String {
        if secret.is_empty() {
            return String::new();
        }
        match self.keyring() {
            Some(k) => k.seal_text(secret, &crate::crypto::Binding::new(username, TOTP_FIELD)),
            None => secret.to_owned(),
        }
    }

    fn user_from_row(&self, r: &sqlx::any::AnyRow) -> Result<UserRow> {
        let d = || q("decode a user");
        let username: String = r.try_get("username").map_err(d())?;
        let sealed: String = r.try_get("totp_secret").map_err(d())?;
        let totp_secret = if sealed.is_empty() {
            String::new()
        } else {
            self.open_text(&username, TOTP_FIELD, sealed)?
        };
        let flag = |c: &str| -> Result<bool> { Ok(r.try_get::<i64, _>(c).map_err(d())? != 0) };
        Ok(UserRow {
            password_hash: r.try_get("password_hash").map_err(d())?,
            totp_secret,
            totp_enabled: flag("totp_enabled")?,
            totp_last_step: r.try_get("totp_last_step").map_err(d())?,
            role: r.try_get("role").map_err(d())?,
            facility: r.try_get("facility").map_err(d())?,
            display_name: r.try_get("display_name").map_err(d())?,
            failed: r.try_get("failed").map_err(d())?,
            locked_until: r.try_get("locked_until").map_err(d())?,
            disabled: flag("disabled")?,
            must_change: flag("must_change")?,
            created_at: r.try_get("created_at").map_err(d())?,
            password_changed_at: r.try_get("password_changed_at").map_err(d())?,
            last_login_at: r.try_get("last_login_at").map_err(d())?,
            username,
        })
    }

    /// Adds a user; `Inconsistent` when the name is taken.
    pub async fn create_user(&self, u: &UserRow) -> Result<()> {
        if self.user(&u.username).await?.is_some() {
            return Err(StoreError::Inconsistent(format!(
                "a user named {:?} exists already",
                u.username
            )));
        }
        let mut s = Sql::new(format!("INSERT INTO users ({USER_COLUMNS}) VALUES ("));
        s.bind(u.username.clone());
        s.push(", ");
        s.bind(u.password_hash.clone());
        s.push(", ");
        s.bind(self.seal_totp(&u.username, &u.totp_secret));
        for v in [i64::from(u.totp_enabled), u.totp_last_step] {
            s.push(", ");
            s.bind(v);
        }
        for v in [&u.role, &u.facility, &u.display_name] {
            s.push(", ");
            s.bind(v.clone());
        }
        for v in [
            u.failed,
            u.locked_until,
            i64::from(u.disabled),
            i64::from(u.must_change),
            u.created_at,
            u.password_changed_at,
            u.last_login_at,
        ] {
            s.push(", ");
            s.bind(v);
        }
        s.push(")");
        s.query()
            .execute(self.write_pool())
            .await
            .map_err(q("add a user"))?;
        Ok(())
    }

    /// A user by name.
    pub async fn user(&self, username: &str) -> Result<Option<UserRow>> {
        let mut s = Sql::new(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username = "
        ));
        s.bind(username.to_owned());
        let row = s
            .query()
            .fetch_optional(self.write_pool())
            .await
            .map_err(q("look up a user"))?;
        row.map(|r| self.user_from_row(&r)).transpose()
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<UserRow>> {
        let rows = Sql::new(format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY username"
        ))
        .query()
        .fetch_all(&self.read)
        .await
        .map_err(q("list users"))?;
        rows.iter().map(|r| self.user_from_row(r)).collect()
    }

    /// How many users there are.
    pub async fn user_count(&self) -> Result<i64> {
        let r = Sql::new("SELECT COUNT(*) AS n FROM users".into())
            .query()
            .fetch_one(self.write_pool())
            .await
            .map_err(q("count users"))?;
        r.try_get("n").map_err(q("count users"))
    }

    async fn update_user(&self, username: &str, set: Sql, op: &'static str) -> Result<()> {
        let mut s = set;
        s.push(" WHERE username = ");
        s.bind(username.to_owned());
        let r = s.query().execute(self.write_pool()).await.map_err(q(op))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user {username}")));
        }
        Ok(())
    }

    /// Sets a user's password hash; `must_change` when someone other than the user set it.
    /// Unlocks the account and forgets its failed attempts.
    pub async fn set_password(&self, username: &str, hash: &str, must_change: bool) -> Result<()> {
        let mut s = Sql::new("UPDATE users SET password_hash = ".into());
        s.bind(hash.to_owned());
        s.push(", must_change = ");
        s.bind(i64::from(must_change));
        s.push(", failed = 0, locked_until = 0, password_changed_at = ");
        s.bind(now_ms());
        self.update_user(username, s, "set a password").await
    }

    /// Stores a TOTP secret (not yet enabled: [`Store::enable_totp`] after the first good
    /// code), or removes it (`""`).
    pub async fn set_totp(&self, username: &str, secret: &str, enabled: bool) -> Result<()> {
        let mut s = Sql::new("UPDATE users SET totp_secret = ".into());
        s.bind(self.seal_totp(username, secret));
        s.push(", totp_enabled = ");
        s.bind(i64::from(enabled));
        s.push(", totp_last_step = 0");
        self.update_user(username, s, "set a TOTP secret").await
    }

    /// Confirms the enrolled secret and records the step of the code that confirmed it.
    pub async fn enable_totp(&self, username: &str, step: i64) -> Result<()> {
        let mut s = Sql::new("UPDATE users SET totp_enabled = 1, totp_last_step = ".into());
        s.bind(step);
        self.update_user(username, s, "enable TOTP").await
    }

    /// Records an accepted TOTP step, only if it is later than the last one (a code is never
    /// accepted twice, also not by two nodes at once). `false` when it was not later.
    pub async fn take_totp_step(&self, username: &str, step: i64) -> Result<bool> {
        let mut s = Sql::new("UPDATE users SET totp_last_step = ".into());
        s.bind(step);
        s.push(" WHERE username = ");
        s.bind(username.to_owned());
        s.push(" AND totp_last_step < ");
        s.bind(step);
        let r = s
            .query()
            .execute(self.write_pool())
            .await
            .map_err(q("record a TOTP step"))?;
        Ok(r.rows_affected() == 1)
    }

    /// Records a failed login: the count goes up, and at `max` the account is locked until
    /// `lock_until` (and the count starts again). Returns the count after it.
    pub async fn login_failed(&self, username: &str, max: i64, lock_until: i64) -> Result<i64> {
        let mut s = Sql::new("UPDATE users SET failed = failed + 1 WHERE username = ".into());
        s.bind(username.to_owned());
        s.query()
            .execute(self.write_pool())
            .await
            .map_err(q("count a failed login"))?;
        let n = self.user(username).await?.map_or(0, |u| u.failed);
        if n >= max {
            let mut s = Sql::new("UPDATE users SET failed = 0, locked_until = ".into());
            s.bind(lock_until);
            self.update_user(username, s, "lock a user").await?;
        }
        Ok(n)
    }

    /// Records a successful login: failed attempts forgotten.
    pub async fn login_succeeded(&self, username: &str) -> Result<()> {
        let mut s =
            Sql::new("UPDATE users SET failed = 0, locked_until = 0, last_login_at = ".into());
        s.bind(now_ms());
        self.update_user(username, s, "record a login").await
    }

    /// Locks (`until` in unix ms) or unlocks (0) an account.
    pub async fn lock_user(&self, username: &str, until: i64) -> Result<()> {
        let mut s = Sql::new("UPDATE users SET failed = 0, locked_until = ".into());
        s.bind(until);
        self.update_user(username, s, "lock a user").await
    }

    /// Disables or enables an account; disabling ends its sessions.
    pub async fn disable_user(&self, username: &str, disabled: bool) -> Result<()> {
        let mut s = Sql::new("UPDATE users SET disabled = ".into());
        s.bind(i64::from(disabled));
        self.update_user(username, s, "disable a user").await?;
        if disabled {
            self.end_sessions_of(username).await?;
        }
        Ok(())
    }

    /// Changes a user's role and facility; their sessions end (they log in again with the new
    /// rights).
    pub async fn set_user_role(&self, username: &str, role: &str, facility: &str) -> Result<()> {
        let mut s = Sql::new("UPDATE users SET role = ".into());
        s.bind(role.to_owned());
        s.push(", facility = ");
        s.bind(facility.to_owned());
        self.update_user(username, s, "change a user's role")
            .await?;
        self.end_sessions_of(username).await
    }

    /// Stores a new session.
    pub async fn create_session(&self, r: &SessionRow) -> Result<()> {
        let mut s = Sql::new(
            "INSERT INTO ui_sessions (token_hash, username, role, facility, method, csrf, created_at, last_seen, expires_at) VALUES (".into(),
        );
        s.bind(r.token_hash.clone());
        for v in [&r.username, &r.role, &r.facility, &r.method, &r.csrf] {
            s.push(", ");
            s.bind(v.clone());
        }
        for v in [r.created_at, r.last_seen, r.expires_at] {
            s.push(", ");
            s.bind(v);
        }
        s.push(")");
        s.query()
            .execute(self.write_pool())
            .await
            .map_err(q("store a session"))?;
        Ok(())
    }

    /// A session by the hash of its token.
    pub async fn session(&self, token_hash: &str) -> Result<Option<SessionRow>> {
        let mut s = Sql::new(
            "SELECT token_hash, username, role, facility, method, csrf, created_at, last_seen, expires_at FROM ui_sessions WHERE token_hash = ".into(),
        );
        s.bind(token_hash.to_owned());
        let Some(r) = s
            .query()
            .fetch_optional(self.write_pool())
            .await
            .map_err(q("look up a session"))?
        else {
            return Ok(None);
        };
        let d = || q("decode a session");
        Ok(Some(SessionRow {
            token_hash: r.try_get("token_hash").map_err(d())?,
            username: r.try_get("username").map_err(d())?,
            role: r.try_get("role").map_err(d())?,
            facility: r.try_get("facility").map_err(d())?,
            method: r.try_get("method").map_err(d())?,
            csrf: r.try_get("csrf").map_err(d())?,
            created_at: r.try_get("created_at").map_err(d())?,
            last_seen: r.try_get("last_seen").map_err(d())?,
            expires_at: r.try_get("expires_at").map_err(d())?,
        }))
    }

    /// Marks a session used now.
    pub async fn touch_session(&self, token_hash: &str, at: i64) -> Result<()> {
        let mut s = Sql::new("UPDATE ui_sessions SET last_seen = ".into());
        s.bind(at);
        s.push(" WHERE token_hash = ");
        s.bind(token_hash.to_owned());
        s.query()
            .execute(self.write_pool())
            .await
            .map_err(q("touch a session"))?;
        Ok(())
    }

    /// Ends one session (logout, expiry).
    pub async fn end_session(&self, token_hash: &str) -> Result<()> {
        let mut s = Sql::new("DELETE FROM ui_sessions WHERE token_hash = ".into());
        s.bind(token_hash.to_owned());
        s.query()
            .execute(self.write_pool())
            .await
            .map_err(q("end a session"))?;
        Ok(())
    }

    /// Ends every session of a user (password change, disabling, a role change).
    pub async fn end_sessions_of(&self, username: &str) -> Result<()> {
        let mut s = Sql::new("DELETE FROM ui_sessions WHERE username = ".into());
        s.bind(username.to_owned());
        s.query()
            .execute(self.write_pool())
            .await
            .map_err(q("end a user's sessions"))?;
        Ok(())
    }

    /// Deletes sessions past their absolute end or idle since before `idle_before`, and OIDC
    /// logins begun before `oidc_before`. Returns how many sessions.
    pub async fn expire_sessions(
        &self,
        now: i64,
        idle_before: i64,
        oidc_before: i64,
    ) -> Result<u64> {
        let mut s = Sql::new("DELETE FROM ui_sessions WHERE expires_at <= ".into());
        s.bind(now);
        s.push(" OR last_seen < ");
        s.bind(idle_before);
        let n = s
            .query()
            .execute(self.write_pool())
            .await
            .map_err(q("expire sessions"))?
            .rows_affected();
        let mut s = Sql::new("DELETE FROM oidc_logins WHERE created_at < ".into());
        s.bind(oidc_before);
        s.query()
            .execute(self.write_pool())
            .await
            .map_err(q("expire OIDC logins"))?;
        Ok(n)
    }

    /// Stores an OIDC login under way.
    pub async fn begin_oidc_login(&self, l: &OidcLogin) -> Result<()> {
        let mut s = Sql::new(
            "INSERT INTO oidc_logins (state, verifier, nonce, return_to, created_at) VALUES ("
                .into(),
        );
        s.bind(l.state.clone());
        for v in [&l.verifier, &l.nonce, &l.return_to] {
            s.push(", ");
            s.bind(v.clone());
        }
        s.push(", ");
        s.bind(l.created_at);
        s.push(")");
        s.query()
            .execute(self.write_pool())
            .await
            .map_err(q("store an OIDC login"))?;
        Ok(())
    }

    /// Takes (reads and deletes) the OIDC login of `state`: a state is used once.
    pub async fn take_oidc_login(&self, state: &str) -> Result<Option<OidcLogin>> {
        let mut s = Sql::new(
            "SELECT state, verifier, nonce, return_to, created_at FROM oidc_logins WHERE state = "
                .into(),
        );
        s.bind(state.to_owned());
        let Some(r) = s
            .query()
            .fetch_optional(self.write_pool())
            .await
            .map_err(q("look up an OIDC login"))?
        else {
            return Ok(None);
        };
        let mut del = Sql::new("DELETE FROM oidc_logins WHERE state = ".into());
        del.bind(state.to_owned());
        let taken = del
            .query()
            .execute(self.write_pool())
            .await
            .map_err(q("take an OIDC login"))?
            .rows_affected();
        if taken != 1 {
            return Ok(None);
        }
        let d = || q("decode an OIDC login");
        Ok(Some(OidcLogin {
            state: r.try_get("state").map_err(d())?,
            verifier: r.try_get("verifier").map_err(d())?,
            nonce: r.try_get("nonce").map_err(d())?,
            return_to: r.try_get("return_to").map_err(d())?,
            created_at: r.try_get("created_at").map_err(d())?,
        }))
    }
}
