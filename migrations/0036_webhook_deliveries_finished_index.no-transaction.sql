-- Finished webhook deliveries (delivered or given up) by when they finished: what the upkeep job deletes once they
-- are older than FirmwareManager:Retention:WebhookDeliveriesMaxAgeDays (default 30), oldest first, a batch at a
-- time, without reading the pending ones. Built without blocking writes (no transaction: CONCURRENTLY). IF NOT
-- EXISTS: a build interrupted before DbUp recorded this script is resumed by running it again (an invalid index left
-- by a failed build must be dropped by hand first: docs/schema.md, "Migrations").

-- Session settings: outside a transaction they last as long as the migrator's connection.
SET lock_timeout = '5s';
SET statement_timeout = '2h';

-- squawk assumes every script runs in a transaction (.squawk.toml); this one does not (its name says so).
-- squawk-ignore ban-concurrent-index-creation-in-transaction
CREATE INDEX CONCURRENTLY IF NOT EXISTS webhook_deliveries_finished_idx
    ON webhook_deliveries ((COALESCE(delivered_at, given_up_at)))
    WHERE delivered_at IS NOT NULL OR given_up_at IS NOT NULL;
