-- On plain PostgreSQL, devices_project_id_key (0044) becomes the devices' primary key, and the device keys'
-- foreign key references it with the project, under the name and columns it has on Citus (0018):
-- device_api_keys (project_id, device_id) -> devices (project_id, id). On Citus both are so already: nothing to do.
-- Locks: each statement changes the catalog only. ADD FOREIGN KEY ... NOT VALID checks no row (0046 validates them
-- without blocking writes); dropping the old key and the old primary key removes a constraint and an index; ADD
-- PRIMARY KEY USING INDEX adopts a built index whose columns are NOT NULL already (no scan). devices and
-- device_api_keys stay locked until the commit, a moment after these statements, bounded by the lock_timeout below.
-- During the upgrade an older instance runs the same statements, which name every device with its project.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '1min';

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;

    ALTER TABLE device_api_keys ADD CONSTRAINT device_api_keys_device_fkey
        FOREIGN KEY (project_id, device_id) REFERENCES devices (project_id, id) NOT VALID;
    ALTER TABLE device_api_keys DROP CONSTRAINT device_api_keys_device_id_fkey;
    ALTER TABLE devices DROP CONSTRAINT devices_pkey;
    ALTER TABLE devices ADD CONSTRAINT devices_pkey PRIMARY KEY USING INDEX devices_project_id_key;
END
$$;
