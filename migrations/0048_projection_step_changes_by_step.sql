-- A projection step's changes (0042) keyed by the step: each row carries the step's last feed position
-- (last_arrival), first in the key after the project, and the step's statements read and delete only its own rows
-- (project_id, last_arrival). Before, they read the project's rows by (project_id) alone, and every row a step had
-- deleted stayed in the key as a dead entry until a vacuum: autovacuum comes at most once a minute, and removes
-- nothing deleted after a snapshot still held open (an export's), so under load each of the step's reads and deletes
-- of these tables (seven reads, two deletes) walked the entries of a minute of steps or more (a 14 MB index holding no
-- live row) to find its own: 9.7 ms for a statement that wrote nothing (docs/performance.md). Keyed by the step, a
-- read enters the key where its rows are and ends where they end; the entries of steps before it lie before that,
-- and a vacuum takes them as before.
--
-- Locks: the tables hold no committed row (a step writes and deletes its rows in its own transaction), so the column
-- (a constant default: no rewrite) and the new key (built on an empty table) take a moment, under the lock_timeout
-- below; a step running meanwhile waits for the commit, or fails on the timeout and is retried whole.
-- Upgrading: an older instance's step writes last_arrival 0 (the default) and reads and deletes by project, as
-- before; a project's steps run one at a time (its project_projections row), so an older and a newer step never
-- share the tables' rows of a project.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '1min';
-- On Citus, DDL in this transaction goes over one connection per node (0029 says why).
SET LOCAL citus.multi_shard_modify_mode = 'sequential';

ALTER TABLE projection_step_devices ADD COLUMN last_arrival bigint NOT NULL DEFAULT 0;
ALTER TABLE projection_step_transitions ADD COLUMN last_arrival bigint NOT NULL DEFAULT 0;

ALTER TABLE projection_step_devices DROP CONSTRAINT projection_step_devices_pkey;
-- The table holds no committed row: the key is built at once, and there is nothing to validate.
-- squawk-ignore adding-serial-primary-key-field, constraint-missing-not-valid
ALTER TABLE projection_step_devices ADD CONSTRAINT projection_step_devices_pkey PRIMARY KEY (project_id, last_arrival, device_id);

ALTER TABLE projection_step_transitions DROP CONSTRAINT projection_step_transitions_pkey;
-- The table holds no committed row: the key is built at once, and there is nothing to validate.
-- squawk-ignore adding-serial-primary-key-field, constraint-missing-not-valid
ALTER TABLE projection_step_transitions ADD CONSTRAINT projection_step_transitions_pkey PRIMARY KEY (project_id, last_arrival, device_id, to_firmware);
