-- devices_project_id_id_idx (project_id, id) pages a project's devices and served the device keys' foreign key; the
-- primary key has the same columns since 0045 (on Citus since 0018) and serves both. Dropped without blocking writes
-- (no transaction: CONCURRENTLY). On Citus, devices_project_id_key, the copy of the primary key 0044 built there,
-- goes too; on plain PostgreSQL 0045 made it the primary key (renamed devices_pkey), so IF EXISTS finds nothing.
-- IF EXISTS: a script interrupted before DbUp recorded it is resumed by running it again.

-- Session settings: outside a transaction they last as long as the migrator's connection.
SET lock_timeout = '5s';
SET statement_timeout = '2h';

DROP INDEX CONCURRENTLY IF EXISTS devices_project_id_id_idx;
DROP INDEX CONCURRENTLY IF EXISTS devices_project_id_key;
