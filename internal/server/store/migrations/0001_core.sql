-- 0001 core: devices, certificates, enrollment tokens, users, API keys,
-- sessions, log requests, audit log. Owned by the store engineer.
-- Times are BIGINT unix milliseconds (0 = unset); JSON is TEXT.

-- One row per device name: the current life. Earlier lives of a name that
-- was decommissioned and enrolled again live in device_lives.
CREATE TABLE devices (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    life BIGINT NOT NULL,
    fleet TEXT NOT NULL,
    status TEXT NOT NULL,
    cert_serial TEXT NOT NULL,
    cert_key_sha256 TEXT NOT NULL,
    cert_not_after BIGINT NOT NULL,
    hardware TEXT NOT NULL,
    agent_version TEXT NOT NULL,
    tags TEXT NOT NULL,
    installed TEXT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    heartbeat_interval_ms BIGINT NOT NULL,
    enrolled_with TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    decommissioned_at BIGINT NOT NULL
);
CREATE INDEX devices_status_name ON devices (status, name);
CREATE INDEX devices_updated ON devices (updated_at);

-- Tags again, one row each, so that tag filters are portable SQL.
CREATE TABLE device_tags (
    device_name TEXT NOT NULL REFERENCES devices (name) ON DELETE CASCADE,
    tag_key TEXT NOT NULL,
    tag_value TEXT NOT NULL,
    PRIMARY KEY (device_name, tag_key)
);
CREATE INDEX device_tags_kv ON device_tags (tag_key, tag_value);

-- Finished lives of a name (history kept after re-enrollment).
CREATE TABLE device_lives (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    life BIGINT NOT NULL,
    fleet TEXT NOT NULL,
    cert_serial TEXT NOT NULL,
    cert_key_sha256 TEXT NOT NULL,
    hardware TEXT NOT NULL,
    agent_version TEXT NOT NULL,
    tags TEXT NOT NULL,
    installed TEXT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    decommissioned_at BIGINT NOT NULL,
    UNIQUE (name, life)
);

-- Every certificate issued to a device life, and its revocation.
CREATE TABLE device_certs (
    serial TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    device_name TEXT NOT NULL,
    key_sha256 TEXT NOT NULL,
    not_after BIGINT NOT NULL,
    issued_at BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL,
    revoke_reason TEXT NOT NULL
);
CREATE INDEX device_certs_device ON device_certs (device_id);

CREATE TABLE enrollment_tokens (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    uses_total BIGINT NOT NULL,
    uses_left BIGINT NOT NULL,
    tags TEXT NOT NULL,
    allow_replace BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL
);
CREATE INDEX enrollment_tokens_created ON enrollment_tokens (created_at, id);

CREATE TABLE users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    owner TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL
);

CREATE TABLE sessions (
    session_hash TEXT PRIMARY KEY,
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_name);
CREATE INDEX sessions_expires ON sessions (expires_at);

CREATE TABLE log_requests (
    id TEXT PRIMARY KEY,
    device_name TEXT NOT NULL,
    device_id TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    since_at BIGINT NOT NULL,
    max_lines BIGINT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL,
    bundle BYTEA,
    bundle_size BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    completed_at BIGINT NOT NULL
);
CREATE INDEX log_requests_device ON log_requests (device_name, created_at);
CREATE INDEX log_requests_state ON log_requests (state, created_at);

-- The audit chain (SPEC §10). audit_head is the single row every append
-- locks, so concurrent replicas extend the chain one at a time.
CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    event_type TEXT NOT NULL,
    subject TEXT NOT NULL,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_events_type ON audit_events (event_type, seq);
CREATE INDEX audit_events_subject ON audit_events (subject, seq);

CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
