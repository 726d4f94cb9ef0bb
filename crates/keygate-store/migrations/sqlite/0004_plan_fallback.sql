-- What decides a plan's limits while the shared limiter (Redis) does not answer: NULL (the
-- node's --redis-unavailable), 'local' or 'refuse'.
ALTER TABLE usage_plans ADD COLUMN fallback TEXT CHECK (fallback IN ('local', 'refuse'));
