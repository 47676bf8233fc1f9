-- The console's people (issue 21, CN-31): local users with an argon2id password hash, a TOTP
-- second factor (its secret sealed like other sealed columns: key rotation re-seals it),
-- lockout after failed logins; the console's sessions (only the SHA-256 of the cookie's token is
-- kept, with idle and absolute expiry); and the OIDC logins under way (state, PKCE verifier,
-- nonce), kept in the store so that the identity provider's redirect may reach any node.
CREATE TABLE users (
    username             TEXT PRIMARY KEY,
    password_hash        TEXT NOT NULL,
    totp_secret          TEXT NOT NULL DEFAULT '',
    totp_enabled         INTEGER NOT NULL DEFAULT 0,
    totp_last_step       INTEGER NOT NULL DEFAULT 0,
    role                 TEXT NOT NULL,
    facility             TEXT NOT NULL,
    display_name         TEXT NOT NULL DEFAULT '',
    failed               INTEGER NOT NULL DEFAULT 0,
    locked_until         INTEGER NOT NULL DEFAULT 0,
    disabled             INTEGER NOT NULL DEFAULT 0,
    must_change          INTEGER NOT NULL DEFAULT 0,
    created_at           INTEGER NOT NULL,
    password_changed_at  INTEGER NOT NULL DEFAULT 0,
    last_login_at        INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE ui_sessions (
    token_hash  TEXT PRIMARY KEY,
    username    TEXT NOT NULL,
    role        TEXT NOT NULL,
    facility    TEXT NOT NULL,
    method      TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX ui_sessions_user ON ui_sessions (username);
CREATE TABLE oidc_logins (
    state       TEXT PRIMARY KEY,
    verifier    TEXT NOT NULL,
    nonce       TEXT NOT NULL,
    return_to   TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
