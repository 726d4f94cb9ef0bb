-- Usage arrives in arrival order: gateways append to `usage_log` (no random page writes per key),
-- and any node folds the log into `usage_days` in key order a few times a minute (the fold
-- deletes what it moves in the same statement, so two nodes folding at once never count a row
-- twice). Reads add the log to the days. `at` is the last admitted request of the row (unix
-- seconds), so lastUsedDate comes from the usage rows instead of a second write per key
-- (`api_keys.last_used_date` keeps what was recorded before this migration).
CREATE TABLE usage_log (
    plan_id TEXT COLLATE "C" NOT NULL REFERENCES usage_plans (id) ON DELETE CASCADE,
    key_id  TEXT COLLATE "C" NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    day     TEXT COLLATE "C" NOT NULL,
    used    BIGINT NOT NULL,
    at      BIGINT
);
CREATE INDEX usage_log_key ON usage_log (key_id);
CREATE INDEX usage_log_plan ON usage_log (plan_id);

ALTER TABLE usage_days ADD COLUMN at BIGINT;
DROP INDEX usage_days_key;
CREATE INDEX usage_days_key ON usage_days (key_id, at);
