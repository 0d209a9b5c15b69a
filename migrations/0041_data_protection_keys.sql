-- ASP.NET Core Data Protection's key ring (Database/DataProtectionKeys.cs): the keys that protect webhook secrets at
-- rest and paging cursors, shared by every instance, so that what one instance protected another reads. Data
-- Protection writes each element once and never changes it (a key's revocation is an element of its own), makes
-- a new key ahead of the current one's expiry (90 days) and keeps the old ones, so that what they protected stays
-- readable. The elements are kept as Data Protection writes them, as the service_secrets rows are: who can read
-- this table can read what they protect (README, "Webhooks" and "Paging"). A reference table on Citus: a few rows,
-- read by every instance at startup and once a day.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '1min';

CREATE TABLE data_protection_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    friendly_name text NOT NULL,
    xml text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;

    PERFORM create_reference_table('data_protection_keys');
END
$$;
