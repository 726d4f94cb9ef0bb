-- Key lifecycle beyond AWS: expiry, last use, and rotation with a grace period.
ALTER TABLE api_keys ADD COLUMN expires INTEGER;
ALTER TABLE api_keys ADD COLUMN last_used_date INTEGER;

-- Values replaced by a rotation keep working until `expires` (the end of the grace period).
CREATE TABLE api_key_old_values (
    digest  BLOB PRIMARY KEY,
    key_id  TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    expires INTEGER NOT NULL
);
