-- Report-only enforcement (`private: report`): requests let through that the key check or the
-- usage plan would have refused, counted per UTC hour, route, reason and client. Kept 31 days.
CREATE TABLE would_refuse (
    hour       INTEGER NOT NULL,
    api_id     TEXT NOT NULL,
    stage      TEXT NOT NULL,
    method     TEXT NOT NULL,
    path       TEXT NOT NULL,
    reason     TEXT NOT NULL,
    key_id     TEXT NOT NULL,    -- '' when the value sent is no key's
    client     TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    count      INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    PRIMARY KEY (hour, api_id, stage, method, path, reason, key_id, client, user_agent)
);
