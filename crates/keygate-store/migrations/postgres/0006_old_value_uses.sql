-- Traffic-aware rotation: who still sends a value a rotation replaced, and `--retire-when-idle`
-- (the value is refused once it has not been used for `retire_idle` seconds; gateways retire
-- it). `rotated_at` is NULL for values rotated before this migration.
ALTER TABLE api_key_old_values ADD COLUMN rotated_at BIGINT;
ALTER TABLE api_key_old_values ADD COLUMN retire_idle BIGINT;
CREATE TABLE old_value_uses (
    digest     BYTEA NOT NULL REFERENCES api_key_old_values (digest) ON DELETE CASCADE,
    client     TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    count      BIGINT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL,
    PRIMARY KEY (digest, client, user_agent)
);
