-- Admin API: credentials for AWS Signature Version 4, bearer tokens, and the audit log.

-- SigV4 needs the secret itself to check a signature, so it cannot be hashed: it is stored
-- encrypted (AEAD) under a master key kept outside the database (a file in the data directory or
-- KEYGATE_MASTER_KEY). A leaked database alone does not reveal usable secrets.
CREATE TABLE admin_credentials (
    access_key_id  TEXT PRIMARY KEY,
    secret_sealed  BLOB NOT NULL,
    description    TEXT,
    created_date   INTEGER NOT NULL,
    revoked_date   INTEGER
);

-- Bearer tokens are high-entropy random strings: a SHA-256 digest is enough to check them.
CREATE TABLE admin_tokens (
    id            TEXT PRIMARY KEY,
    digest        BLOB NOT NULL UNIQUE,
    prefix        TEXT NOT NULL,
    description   TEXT,
    created_date  INTEGER NOT NULL,
    revoked_date  INTEGER
);

-- Every admin change: who, what, on what, when. Never a key value or a secret.
CREATE TABLE audit_log (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT
);
