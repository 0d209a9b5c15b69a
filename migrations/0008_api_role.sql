-- The role the API runs as: it reads and writes rows, and can do nothing else. No DDL (it owns nothing and
-- may not create in the schema), no TRUNCATE, and DELETE only on firmware_events, for the retention job.
-- Migrations run as the owner of the schema (ConnectionStrings:FirmwareManagerMigrations); the DBA gives the
-- API's login this role: CREATE ROLE fm_api LOGIN PASSWORD '...' IN ROLE firmware_manager_api;
-- (docs/reliability.md, "Least privilege"). Every later migration that creates a table grants it here too;
-- a test fails when a table has no grant for this role.

-- Roles belong to the cluster, not the database: an installation with several databases shares this one.
-- Creating it needs CREATEROLE; a DBA who keeps that from the migration role creates it beforehand.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'firmware_manager_api') THEN
        CREATE ROLE firmware_manager_api NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO firmware_manager_api;

-- Projects are created by the create-project command, which runs as the owner.
GRANT SELECT ON projects TO firmware_manager_api;
GRANT SELECT, INSERT, UPDATE ON project_memberships TO firmware_manager_api;
GRANT SELECT, INSERT, UPDATE ON membership_api_keys TO firmware_manager_api;
GRANT SELECT, INSERT, UPDATE ON devices TO firmware_manager_api;
-- Bulk enrollment draws device ids from the identity's sequence before inserting.
GRANT USAGE ON SEQUENCE devices_id_seq TO firmware_manager_api;
GRANT SELECT, INSERT, UPDATE ON device_api_keys TO firmware_manager_api;
-- Events are never changed; retention deletes the old ones.
GRANT SELECT, INSERT, DELETE ON firmware_events TO firmware_manager_api;
GRANT SELECT, INSERT, UPDATE ON device_firmware_status TO firmware_manager_api;
GRANT SELECT, INSERT, UPDATE ON firmware_version_counts TO firmware_manager_api;
-- The audit log is append-only for the API.
GRANT SELECT, INSERT ON audit_log TO firmware_manager_api;
-- The cursor key, made by migration 0005.
GRANT SELECT ON service_secrets TO firmware_manager_api;
