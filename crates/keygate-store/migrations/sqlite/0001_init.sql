-- keygate control-plane schema (SQLite). Deployments are immutable: rows are only ever inserted.

-- One row; every write transaction bumps `version` so gateways can notice changes with one cheap read.
CREATE TABLE meta (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO meta (id, version) VALUES (1, 0);

CREATE TABLE apis (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    -- The API's current definition (its resources and methods), which the next deployment snapshots.
    definition   TEXT NOT NULL,
    created_date INTEGER NOT NULL
);

CREATE TABLE deployments (
    id           TEXT PRIMARY KEY,
    api_id       TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    created_date INTEGER NOT NULL,
    definition   TEXT NOT NULL
);

CREATE TABLE stages (
    api_id            TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    deployment_id     TEXT NOT NULL REFERENCES deployments (id),
    created_date      INTEGER NOT NULL,
    last_updated_date INTEGER NOT NULL,
    PRIMARY KEY (api_id, name)
);

-- Key values are never stored: only their SHA-256 digest and a short display prefix.
CREATE TABLE api_keys (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    digest            BLOB NOT NULL UNIQUE,
    prefix            TEXT NOT NULL,
    description       TEXT,
    customer_id       TEXT,
    enabled           INTEGER NOT NULL,
    created_date      INTEGER NOT NULL,
    last_updated_date INTEGER NOT NULL
);

-- throttle and quota are JSON ({"rateLimit","burstLimit"} and {"limit","period","offset"}) or NULL.
CREATE TABLE usage_plans (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    description  TEXT,
    throttle     TEXT,
    quota        TEXT,
    created_date INTEGER NOT NULL
);

CREATE TABLE usage_plan_keys (
    plan_id TEXT NOT NULL REFERENCES usage_plans (id) ON DELETE CASCADE,
    key_id  TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    PRIMARY KEY (plan_id, key_id)
);
CREATE INDEX usage_plan_keys_key ON usage_plan_keys (key_id);

-- throttle: JSON map of method key ("/candidates/GET") to {"rateLimit","burstLimit"}.
CREATE TABLE usage_plan_stages (
    plan_id  TEXT NOT NULL REFERENCES usage_plans (id) ON DELETE CASCADE,
    api_id   TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    stage    TEXT NOT NULL,
    throttle TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (plan_id, api_id, stage)
);

-- Requests admitted per key, plan and UTC day (YYYY-MM-DD). Written by gateways in batches.
CREATE TABLE usage_days (
    plan_id TEXT NOT NULL REFERENCES usage_plans (id) ON DELETE CASCADE,
    key_id  TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    day     TEXT NOT NULL,
    used    INTEGER NOT NULL,
    PRIMARY KEY (plan_id, key_id, day)
);

-- Quota granted on top of the plan's limit for one period (AWS update-usage), by period start day.
CREATE TABLE usage_grants (
    plan_id      TEXT NOT NULL REFERENCES usage_plans (id) ON DELETE CASCADE,
    key_id       TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    period_start TEXT NOT NULL,
    extra        INTEGER NOT NULL,
    PRIMARY KEY (plan_id, key_id, period_start)
);
