-- keygate's schema on PostgreSQL: the same tables and meaning as the SQLite schema
-- (migrations/sqlite, 0001-0003 together), in PostgreSQL's types. Times are unix seconds
-- (audit: milliseconds), flags 0/1, JSON documents as text, as there. Names, ids and days sort
-- bytewise (COLLATE "C"), as SQLite sorts them: pages of keys and plans seek by name, and a
-- prefix is a range of code points.

-- One row; every change gateways serve bumps `version`, so they notice it with one cheap read.
CREATE TABLE meta (
    id      BIGINT PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO meta (id, version) VALUES (1, 0);

CREATE TABLE apis (
    id           TEXT COLLATE "C" PRIMARY KEY,
    name         TEXT COLLATE "C" NOT NULL UNIQUE,
    -- The API's current definition, which the next deployment snapshots.
    definition   TEXT NOT NULL,
    created_date BIGINT NOT NULL
);

-- Deployments are immutable: rows are only ever inserted.
CREATE TABLE deployments (
    id           TEXT COLLATE "C" PRIMARY KEY,
    api_id       TEXT COLLATE "C" NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    created_date BIGINT NOT NULL,
    definition   TEXT NOT NULL
);
CREATE INDEX deployments_api ON deployments (api_id);

CREATE TABLE stages (
    api_id            TEXT COLLATE "C" NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    name              TEXT COLLATE "C" NOT NULL,
    deployment_id     TEXT COLLATE "C" NOT NULL REFERENCES deployments (id),
    created_date      BIGINT NOT NULL,
    last_updated_date BIGINT NOT NULL,
    PRIMARY KEY (api_id, name)
);

-- Key values are never stored: only their SHA-256 digest and a short display prefix.
CREATE TABLE api_keys (
    id                TEXT COLLATE "C" PRIMARY KEY,
    name              TEXT COLLATE "C" NOT NULL UNIQUE,
    digest            BYTEA NOT NULL UNIQUE,
    prefix            TEXT NOT NULL,
    description       TEXT,
    customer_id       TEXT COLLATE "C",
    enabled           BIGINT NOT NULL,
    created_date      BIGINT NOT NULL,
    last_updated_date BIGINT NOT NULL,
    expires           BIGINT,
    last_used_date    BIGINT
);

-- Values replaced by a rotation keep working until `expires` (the end of the grace period).
CREATE TABLE api_key_old_values (
    digest  BYTEA PRIMARY KEY,
    key_id  TEXT COLLATE "C" NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    expires BIGINT NOT NULL
);
CREATE INDEX api_key_old_values_key ON api_key_old_values (key_id);

-- throttle and quota are JSON ({"rateLimit","burstLimit"} and {"limit","period","offset"}) or NULL.
CREATE TABLE usage_plans (
    id           TEXT COLLATE "C" PRIMARY KEY,
    name         TEXT COLLATE "C" NOT NULL UNIQUE,
    description  TEXT,
    throttle     TEXT,
    quota        TEXT,
    created_date BIGINT NOT NULL
);

CREATE TABLE usage_plan_keys (
    plan_id TEXT COLLATE "C" NOT NULL REFERENCES usage_plans (id) ON DELETE CASCADE,
    key_id  TEXT COLLATE "C" NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    PRIMARY KEY (plan_id, key_id)
);
CREATE INDEX usage_plan_keys_key ON usage_plan_keys (key_id, plan_id);

-- throttle: JSON map of method key ("/candidates/GET") to {"rateLimit","burstLimit"}.
CREATE TABLE usage_plan_stages (
    plan_id  TEXT COLLATE "C" NOT NULL REFERENCES usage_plans (id) ON DELETE CASCADE,
    api_id   TEXT COLLATE "C" NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    stage    TEXT COLLATE "C" NOT NULL,
    throttle TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (plan_id, api_id, stage)
);

-- Requests admitted per key, plan and UTC day (YYYY-MM-DD). Written by gateways in batches.
CREATE TABLE usage_days (
    plan_id TEXT COLLATE "C" NOT NULL REFERENCES usage_plans (id) ON DELETE CASCADE,
    key_id  TEXT COLLATE "C" NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    day     TEXT COLLATE "C" NOT NULL,
    used    BIGINT NOT NULL,
    PRIMARY KEY (plan_id, key_id, day)
);
CREATE INDEX usage_days_key ON usage_days (key_id, day);

-- Quota granted on top of the plan's limit for one period (AWS update-usage), by period start day.
CREATE TABLE usage_grants (
    plan_id      TEXT COLLATE "C" NOT NULL REFERENCES usage_plans (id) ON DELETE CASCADE,
    key_id       TEXT COLLATE "C" NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    period_start TEXT COLLATE "C" NOT NULL,
    extra        BIGINT NOT NULL,
    PRIMARY KEY (plan_id, key_id, period_start)
);

-- Admin API. SigV4 needs the secret itself to check a signature: it is stored sealed (AEAD)
-- under a master key kept outside the database. Bearer tokens: a SHA-256 digest.
CREATE TABLE admin_credentials (
    access_key_id  TEXT COLLATE "C" PRIMARY KEY,
    secret_sealed  BYTEA NOT NULL,
    description    TEXT,
    created_date   BIGINT NOT NULL,
    revoked_date   BIGINT
);

CREATE TABLE admin_tokens (
    id            TEXT COLLATE "C" PRIMARY KEY,
    digest        BYTEA NOT NULL UNIQUE,
    prefix        TEXT NOT NULL,
    description   TEXT,
    created_date  BIGINT NOT NULL,
    revoked_date  BIGINT
);

-- Every admin change: who, what, on what, when. Never a key value or a secret.
CREATE TABLE audit_log (
    seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time_ms BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT
);
