-- Webhooks (issue 18): admins subscribe a URL to a project's events; every matching event is recorded as a delivery
-- in the transaction that stores it (the outbox), and a background worker sends it (FirmwareManager.Api/Webhooks).
--  * webhooks: the subscription. Its signing secret is kept encrypted (AES-256-GCM) with the 'webhook' key of
--    service_secrets (made below), so that a copy of this table alone does not give it away; the API shows the
--    secret once, when the webhook is made. deleted_at: deleted (its pending deliveries are no longer sent).
--  * webhook_deliveries: one row per (webhook, event), keyed by the event's id, so ingest needs no sequence (on
--    Citus an INSERT ... SELECT that draws from one goes through the coordinator). Sent in order per (webhook,
--    device): a delivery waits while an older one of its device is neither delivered nor given up. A worker
--    claims a delivery by setting claimed_until (FOR UPDATE SKIP LOCKED), so instances share the work and one that
--    dies mid-send leaves it to be claimed again when the claim lapses. It is retried until a set time after it was
--    recorded (or last redelivered by an admin), then given up.
-- Both are a project's data: distributed by project_id and co-located on Citus (docs/scale-out.md).

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '1min';
-- On Citus, DDL in this transaction goes over one connection per node, so that later statements see earlier ones
-- (create_distributed_table refuses to run after a statement that used several). Plain PostgreSQL keeps it as a
-- setting nothing reads.
SET LOCAL citus.multi_shard_modify_mode = 'sequential';

-- The foreign keys to projects come after the tables are distributed (below): on Citus, a new table that references
-- a reference table is added to Citus' metadata at once, and taken out again (which fails for a table with an
-- identity column) when create_distributed_table has to drop that key.
CREATE TABLE webhooks (
    project_id bigint NOT NULL,
    id bigint GENERATED ALWAYS AS IDENTITY,
    url text NOT NULL,
    event_types text[] COLLATE "C" NOT NULL,
    firmware text COLLATE "C",
    secret_ciphertext bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    PRIMARY KEY (project_id, id),
    CONSTRAINT webhooks_url_length CHECK (length(url) BETWEEN 1 AND 2048),
    CONSTRAINT webhooks_event_types_present CHECK (cardinality(event_types) BETWEEN 1 AND 16)
);

CREATE TABLE webhook_deliveries (
    project_id bigint NOT NULL,
    webhook_id bigint NOT NULL,
    event_id bigint NOT NULL,
    device_id bigint NOT NULL,
    event_type text COLLATE "C" NOT NULL,
    created_at timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    claimed_until timestamptz,
    attempts bigint NOT NULL DEFAULT 0,
    last_attempt_at timestamptz,
    last_status bigint,
    last_error text,
    delivered_at timestamptz,
    given_up_at timestamptz,
    redelivered_at timestamptz,
    PRIMARY KEY (project_id, webhook_id, event_id),
    FOREIGN KEY (project_id, webhook_id) REFERENCES webhooks (project_id, id)
);

-- What the worker looks for: deliveries neither delivered nor given up, by when they are due.
CREATE INDEX webhook_deliveries_pending_idx
    ON webhook_deliveries (project_id, next_attempt_at)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;

-- A device's older pending delivery, which a newer one waits for.
CREATE INDEX webhook_deliveries_device_idx
    ON webhook_deliveries (project_id, webhook_id, device_id, event_id)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;

-- Webhooks are audited like the project's other changes: a kind of target more. NOT VALID: every row already there
-- has one of the older kinds; migration 0030 validates it without blocking writes.
ALTER TABLE audit_log DROP CONSTRAINT audit_log_target_kind_known;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_target_kind_known
    CHECK (target_kind IN ('project', 'member', 'member_key', 'device', 'device_key', 'webhook')) NOT VALID;

-- The key that encrypts webhook secrets, shared by every instance: 32 random bytes.
INSERT INTO service_secrets (name, secret)
VALUES ('webhook', decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;

    -- The key between the two goes after both are distributed, as in 0018.
    ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_project_id_webhook_id_fkey;
    PERFORM create_distributed_table('webhooks', 'project_id', colocate_with => 'project_memberships');
    PERFORM create_distributed_table('webhook_deliveries', 'project_id', colocate_with => 'project_memberships');
    ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_project_id_webhook_id_fkey
        FOREIGN KEY (project_id, webhook_id) REFERENCES webhooks (project_id, id);
END
$$;

-- Both tables are new and empty: the keys are checked against no row.
ALTER TABLE webhooks ADD CONSTRAINT webhooks_project_id_fkey FOREIGN KEY (project_id) REFERENCES projects (id);
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_project_id_fkey FOREIGN KEY (project_id) REFERENCES projects (id);
