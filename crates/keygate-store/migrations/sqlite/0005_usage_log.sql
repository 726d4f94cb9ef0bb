-- Usage arrives in arrival order: gateways append to `usage_log` (sequential pages, one small
-- index), and the log is folded into `usage_days` in key order a few times a minute, so a flush
-- after traffic on thousands of keys no longer rewrites thousands of scattered pages. Reads add
-- the log to the days. `at` is the last admitted request of the row (unix seconds), so
-- lastUsedDate comes from the usage rows instead of a second write per key
-- (`api_keys.last_used_date` keeps what was recorded before this migration).
CREATE TABLE usage_log (
    plan_id TEXT NOT NULL REFERENCES usage_plans (id) ON DELETE CASCADE,
    key_id  TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    day     TEXT NOT NULL,
    used    INTEGER NOT NULL,
    at      INTEGER
);
CREATE INDEX usage_log_key ON usage_log (key_id);

ALTER TABLE usage_days ADD COLUMN at INTEGER;
CREATE INDEX usage_days_key ON usage_days (key_id, at);
