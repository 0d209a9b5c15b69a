-- The role the API runs as: it reads and writes rows, and can do nothing else. Migrations run as the owner of the
-- schema (ConnectionStrings:FirmwareManagerMigrations); the API's login is a member of this role
-- (docs/reliability.md, "Least privilege").
--
-- Roles belong to the cluster, not the database, and creating one needs CREATEROLE, which the usual owner of a
-- database (a managed PostgreSQL, a DBA's least-privileged login) does not have. So this script creates the role
-- only when its login may, and otherwise leaves that to the DBA step: `grant-api-role <login>` as a login with
-- CREATEROLE, or CREATE ROLE firmware_manager_api NOLOGIN by hand. The grants themselves are not here: they are
-- applied at every start by migrations/grants/api_role.sql, whenever the role exists, so they follow the schema.
--
-- Edited after release (it used to CREATE ROLE unconditionally and grant here): where the old text ran, the role
-- exists and grants/api_role.sql applies the same grants, narrower; where it failed (42501, no CREATEROLE), this
-- text runs now. DbUp journals scripts by name, so no database runs it twice.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'firmware_manager_api') THEN
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = current_user AND (rolcreaterole OR rolsuper)) THEN
            CREATE ROLE firmware_manager_api NOLOGIN;
        ELSE
            RAISE NOTICE 'firmware_manager_api does not exist and % may not create roles: run grant-api-role as a login that may', current_user;
        END IF;
    END IF;
END
$$;
