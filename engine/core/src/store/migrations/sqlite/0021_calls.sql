-- The consultation's call (issue 18): who joined the room when, was admitted, left and why
-- (one row per signaling session; reconnects keep the session), and the per-session quality
-- summary of every track as each reporter saw it (RTC-20): `source` is `client` (the
-- participant's getStats() samples) or `sfu` (the engine's RTCP receiver reports); `summary` is
-- the JSON of huizhen_domain::consultation::call_quality::Summary. Times in milliseconds since
-- the epoch (UTC).
CREATE TABLE call_sessions (
    session      TEXT PRIMARY KEY NOT NULL,
    consultation TEXT NOT NULL,
    room         TEXT NOT NULL,
    participant  TEXT NOT NULL,
    role         TEXT NOT NULL,
    joined_at    BIGINT NOT NULL,
    admitted_at  BIGINT,
    left_at      BIGINT,
    left_reason  TEXT,
    reconnects   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX call_sessions_consultation ON call_sessions (consultation, joined_at);
CREATE TABLE call_quality (
    session      TEXT NOT NULL,
    pc           TEXT NOT NULL,
    track        TEXT NOT NULL,
    direction    TEXT NOT NULL,
    source       TEXT NOT NULL,
    consultation TEXT NOT NULL,
    kind         TEXT NOT NULL,
    summary      TEXT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (session, pc, track, direction, source)
);
CREATE INDEX call_quality_consultation ON call_quality (consultation);
