-- Ready to distribute by project (docs/scale-out.md): every key row carries its project, and api_key_digests
-- says which project a key belongs to, so that looking a key up reads one project's rows once the tables are
-- spread over nodes by project. Identical on every engine; 0018 distributes on Citus.

-- Fail fast instead of queueing behind (and blocking) live traffic; DbUp runs this script in one transaction.
-- The key tables stay locked for the backfill (a few seconds a million keys): keys the service has cached keep
-- working meanwhile, new lookups wait.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '30min';

ALTER TABLE device_api_keys ADD COLUMN project_id bigint;
UPDATE device_api_keys AS k
SET project_id = d.project_id
FROM devices AS d
WHERE d.id = k.device_id;
-- The scan this makes runs under the lock ADD COLUMN already holds, right after the UPDATE wrote every row.
-- squawk-ignore adding-not-nullable-field
ALTER TABLE device_api_keys ALTER COLUMN project_id SET NOT NULL;

ALTER TABLE membership_api_keys ADD COLUMN project_id bigint;
UPDATE membership_api_keys AS k
SET project_id = m.project_id
FROM project_memberships AS m
WHERE m.id = k.membership_id;
-- As above.
-- squawk-ignore adding-not-nullable-field
ALTER TABLE membership_api_keys ALTER COLUMN project_id SET NOT NULL;

-- Every key's digest and project, device and member keys alike: written with the key, never changed. On Citus it
-- is distributed by the digest itself, so finding a key's project reads one shard.
CREATE TABLE api_key_digests (
    key_hash bytea PRIMARY KEY,
    project_id bigint NOT NULL REFERENCES projects (id),
    CONSTRAINT api_key_digests_key_hash_sha256 CHECK (octet_length(key_hash) = 32)
);

INSERT INTO api_key_digests (key_hash, project_id)
SELECT key_hash, project_id FROM device_api_keys
UNION ALL
SELECT key_hash, project_id FROM membership_api_keys;
