-- On Citus (the extension is in this database), the tables are spread over the workers by project:
-- docs/scale-out.md has the rules every table follows. On plain PostgreSQL this script does nothing.
--  * projects and service_secrets: reference tables (small, rarely written, a copy on every node);
--  * every table of a project's data: distributed by project_id, co-located, so that one project's rows of every
--    table are on one node and a request for one project runs there alone; their primary and unique keys and the
--    foreign keys between them hold project_id, as Citus requires;
--  * api_key_digests: distributed by the digest, so a key's project is found on one shard;
--  * firmware_events and device_firmware_status keep no foreign key to devices: they stay with the project they
--    were reported in, and a composite key would forbid a device to move.
-- Run on a new, empty database (create_distributed_table moves rows it finds, but under a lock): a database that
-- already holds data moves to Citus by dump and restore into one that this script has prepared.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '30min';

DO $$
DECLARE
    -- A project's data, distributed by project_id and co-located; the first is the co-location group's anchor.
    tenant_tables text[] := ARRAY['project_memberships', 'membership_api_keys', 'devices', 'device_api_keys',
                                  'firmware_events', 'device_firmware_status', 'firmware_version_counts',
                                  'project_event_arrivals', 'audit_log'];
    t text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;

    -- The only trigger (0011) reads and writes nothing but the row it checks, which is what Citus calls safe.
    SET LOCAL citus.enable_unsafe_triggers = on;
    -- DDL in this transaction goes over one connection per node, so later statements see earlier ones.
    SET LOCAL citus.multi_shard_modify_mode = 'sequential';

    -- Citus re-creates a table that a foreign key ties to one being distributed, which it cannot do for a table
    -- with an identity column: every foreign key goes first and comes back once all tables are distributed.
    FOREACH t IN ARRAY tenant_tables || 'api_key_digests'::text LOOP
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT IF EXISTS %I', t, t || '_project_id_fkey');
    END LOOP;

    PERFORM create_reference_table('projects');
    PERFORM create_reference_table('service_secrets');

    ALTER TABLE membership_api_keys DROP CONSTRAINT membership_api_keys_membership_id_fkey;
    ALTER TABLE device_api_keys DROP CONSTRAINT device_api_keys_device_id_fkey;
    ALTER TABLE firmware_events DROP CONSTRAINT firmware_events_device_id_fkey;
    ALTER TABLE device_firmware_status DROP CONSTRAINT device_firmware_status_device_id_fkey;

    ALTER TABLE project_memberships DROP CONSTRAINT project_memberships_pkey;
    ALTER TABLE project_memberships ADD CONSTRAINT project_memberships_pkey PRIMARY KEY (project_id, id);
    ALTER TABLE membership_api_keys DROP CONSTRAINT membership_api_keys_pkey;
    ALTER TABLE membership_api_keys ADD CONSTRAINT membership_api_keys_pkey PRIMARY KEY (project_id, id);
    ALTER TABLE membership_api_keys DROP CONSTRAINT membership_api_keys_key_hash_key;
    ALTER TABLE membership_api_keys ADD CONSTRAINT membership_api_keys_key_hash_key UNIQUE (project_id, key_hash);
    ALTER TABLE devices DROP CONSTRAINT devices_pkey;
    ALTER TABLE devices ADD CONSTRAINT devices_pkey PRIMARY KEY (project_id, id);
    ALTER TABLE device_api_keys DROP CONSTRAINT device_api_keys_pkey;
    ALTER TABLE device_api_keys ADD CONSTRAINT device_api_keys_pkey PRIMARY KEY (project_id, id);
    ALTER TABLE device_api_keys DROP CONSTRAINT device_api_keys_key_hash_key;
    ALTER TABLE device_api_keys ADD CONSTRAINT device_api_keys_key_hash_key UNIQUE (project_id, key_hash);
    ALTER TABLE firmware_events DROP CONSTRAINT firmware_events_pkey;
    ALTER TABLE firmware_events ADD CONSTRAINT firmware_events_pkey PRIMARY KEY (project_id, id);
    ALTER TABLE audit_log DROP CONSTRAINT audit_log_pkey;
    ALTER TABLE audit_log ADD CONSTRAINT audit_log_pkey PRIMARY KEY (project_id, id);

    FOREACH t IN ARRAY tenant_tables LOOP
        PERFORM create_distributed_table(t, 'project_id',
            colocate_with => CASE WHEN t = tenant_tables[1] THEN 'none' ELSE tenant_tables[1] END);
    END LOOP;
    PERFORM create_distributed_table('api_key_digests', 'key_hash', colocate_with => 'none');

    FOREACH t IN ARRAY tenant_tables || 'api_key_digests'::text LOOP
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I FOREIGN KEY (project_id) REFERENCES projects (id)', t, t || '_project_id_fkey');
    END LOOP;
    ALTER TABLE membership_api_keys ADD CONSTRAINT membership_api_keys_membership_fkey
        FOREIGN KEY (project_id, membership_id) REFERENCES project_memberships (project_id, id);
    ALTER TABLE device_api_keys ADD CONSTRAINT device_api_keys_device_fkey
        FOREIGN KEY (project_id, device_id) REFERENCES devices (project_id, id);
END
$$;
