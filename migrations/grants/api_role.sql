-- The API role's privileges, applied after the migrations at every start (and by grant-api-role), as the schema's
-- owner, whenever the role exists: all of them revoked and granted again, in one transaction, so that they are
-- exactly these, whatever an older migration or a hand granted. Not journaled: it is written to run again.
--
-- Rows only: no DDL (the role owns nothing and has no CREATE on the schema), no TRUNCATE, no DELETE (retention
-- runs as the owner) but of a projection step's scratch rows, UPDATE only of the columns the service updates, so it can never un-revoke a key,
-- move a device to another project or rewrite an event. A test fails when a table has no grant here.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '1min';

DO $$
BEGIN
    -- PostgreSQL 14 and older let every role create objects in the public schema. Only the schema's owner can
    -- take that back; another owner of the database gets a warning, not an error.
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;

    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'firmware_manager_api') THEN
        RAISE NOTICE 'firmware_manager_api does not exist yet: run grant-api-role (docs/reliability.md, "Least privilege")';
        RETURN;
    END IF;

    REVOKE ALL ON ALL TABLES IN SCHEMA public FROM firmware_manager_api;
    REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM firmware_manager_api;
    GRANT USAGE ON SCHEMA public TO firmware_manager_api;

    -- Projects are created by the create-project command, the cursor key by migration 0005: both as the owner.
    GRANT SELECT ON projects, service_secrets TO firmware_manager_api;
    -- A project's admins set its own event retention (the owner's upkeep job deletes; the API never does).
    GRANT UPDATE (event_max_age_days) ON projects TO firmware_manager_api;
    -- ... and how long after an update a device that says nothing counts as silent.
    GRANT UPDATE (silent_after_hours) ON projects TO firmware_manager_api;

    -- Members are invited (or invited again: role and removed_at come back) and removed.
    GRANT SELECT, INSERT ON project_memberships TO firmware_manager_api;
    GRANT UPDATE (role, removed_at) ON project_memberships TO firmware_manager_api;

    -- Keys are issued, noted as used and revoked; never un-revoked, never moved to another owner.
    GRANT SELECT, INSERT ON membership_api_keys, device_api_keys, api_key_digests TO firmware_manager_api;
    GRANT UPDATE (last_used_at, revoked_at) ON membership_api_keys, device_api_keys TO firmware_manager_api;
    -- ... and each change that makes a cached key lookup wrong moves the number every instance watches (0040).
    GRANT SELECT, INSERT, UPDATE (epoch) ON api_key_epoch TO firmware_manager_api;
    -- Data Protection's key ring: read, and a new key added ahead of the current one's expiry; never changed (0041).
    GRANT SELECT, INSERT ON data_protection_keys TO firmware_manager_api;

    -- Devices are created and decommissioned, and ingest keeps their summary; project_id and serial stay.
    GRANT SELECT, INSERT ON devices TO firmware_manager_api;
    GRANT UPDATE (current_firmware, current_firmware_at, current_firmware_device_at, downgraded_from, last_reported_at,
                  last_event_status, last_event_at, decommissioned_at, hardware, tags) ON devices TO firmware_manager_api;
    -- Bulk enrollment draws device ids from the identity's sequence before inserting.
    GRANT USAGE ON SEQUENCE devices_id_seq TO firmware_manager_api;

    -- Events are never changed or deleted by the API: retention runs as the schema's owner (it drops partitions).
    GRANT SELECT, INSERT ON firmware_events TO firmware_manager_api;

    -- What ingest keeps beside the events.
    GRANT SELECT, INSERT ON device_firmware_status TO firmware_manager_api;
    GRANT UPDATE (status, reported_at) ON device_firmware_status TO firmware_manager_api;
    GRANT SELECT, INSERT ON device_transition_status TO firmware_manager_api;
    GRANT UPDATE (from_firmware, status, error_code, reported_at) ON device_transition_status TO firmware_manager_api;
    GRANT SELECT, INSERT ON firmware_version_counts TO firmware_manager_api;
    GRANT UPDATE (devices, failed, rolled_back, unexplained_downgrades) ON firmware_version_counts TO firmware_manager_api;
    GRANT SELECT, INSERT ON firmware_transition_counts TO firmware_manager_api;
    GRANT UPDATE (attempted, succeeded, failed, rolled_back) ON firmware_transition_counts TO firmware_manager_api;
    GRANT SELECT, INSERT ON firmware_transition_errors, firmware_silence_counts TO firmware_manager_api;
    GRANT UPDATE (devices) ON firmware_transition_errors, firmware_silence_counts TO firmware_manager_api;
    -- Each project's feed numbers: taken by ingest, one row per project.
    GRANT SELECT, INSERT ON project_event_arrivals TO firmware_manager_api;
    GRANT UPDATE (last_arrival) ON project_event_arrivals TO firmware_manager_api;
    -- The projection step stores how far it has projected each project's feed (migration 0037).
    GRANT SELECT, INSERT ON project_projections TO firmware_manager_api;
    GRANT UPDATE (position, projected_at) ON project_projections TO firmware_manager_api;
    -- A projection step's changes (migration 0042): written, read and deleted within the step's transaction.
    GRANT SELECT, INSERT, DELETE ON projection_step_devices, projection_step_transitions TO firmware_manager_api;

    -- Webhooks are made and deleted by admins; ingest records deliveries and the sender keeps their state.
    GRANT SELECT, INSERT ON webhooks, webhook_deliveries TO firmware_manager_api;
    GRANT UPDATE (deleted_at) ON webhooks TO firmware_manager_api;
    GRANT UPDATE (next_attempt_at, claimed_until, attempts, last_attempt_at, last_status, last_error, delivered_at,
                  given_up_at, redelivered_at, redeliveries) ON webhook_deliveries TO firmware_manager_api;

    -- Rollouts are declared and ended by admins; ingest keeps their counters, their devices' states and the halt.
    GRANT SELECT, INSERT ON rollouts, rollout_devices TO firmware_manager_api;
    GRANT UPDATE (ended_at, halted_at, attempted, updated, failed, rolled_back) ON rollouts TO firmware_manager_api;
    GRANT UPDATE (status, reported_at) ON rollout_devices TO firmware_manager_api;

    -- The audit log is append-only for the API.
    GRANT SELECT, INSERT ON audit_log TO firmware_manager_api;
END
$$;
