-- 0002 artifacts and TUF metadata. Owned by the TUF / signed-updates engineer.
-- Times are BIGINT unix milliseconds; JSON is TEXT.

-- Every signed TUF document the repository ever served (one row per role
-- and version; timestamps are pruned to the most recent ones). The database
-- is the source of truth so that every replica serves the same versions:
-- a (role, version) collision means another replica signed first.
CREATE TABLE tuf_metadata (
    role TEXT NOT NULL,
    version BIGINT NOT NULL,
    body TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (role, version)
);

-- Published artifacts (SPEC §6). name@version is unique; the bytes live in
-- the content-addressed blob store under sha256.
CREATE TABLE artifacts (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    kind TEXT NOT NULL,
    target_path TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL,
    length BIGINT NOT NULL,
    custom TEXT NOT NULL,
    published_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX artifacts_created ON artifacts (created_at, name, version);
