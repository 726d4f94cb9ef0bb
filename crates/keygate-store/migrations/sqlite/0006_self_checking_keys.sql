-- Generated key values check themselves (keygate_types::key): `kgk1`, 30 random characters and
-- a checksum. A stored display prefix that is the marker `kgk1` alone belongs to a value of that
-- form that is not self-checking (imported, or generated before values checked themselves);
-- while the store holds one, gateways look every value up instead of refusing a bad checksum
-- at once. Old values of rotations keep their prefix for the same reason (NULL: stored before
-- this migration, so unknown).
ALTER TABLE api_key_old_values ADD COLUMN prefix TEXT;
CREATE INDEX api_keys_lookalike ON api_keys (id) WHERE prefix = 'kgk1';
