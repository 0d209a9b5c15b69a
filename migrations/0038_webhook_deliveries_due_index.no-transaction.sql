-- Deliveries due, per webhook (issue 28): each webhook's deliveries are sent in a lane of their own (WebhookSender),
-- so the sender asks, per webhook, whether one is due and claims the oldest due first. This index answers both with a
-- probe per webhook, whatever the number of deliveries pending elsewhere; it replaces webhook_deliveries_pending_idx
-- (per project), which nothing reads any more. Built and dropped without blocking writes (no transaction:
-- CONCURRENTLY). IF [NOT] EXISTS: a script interrupted before DbUp recorded it is resumed by running it again (an
-- invalid index left by a failed build must be dropped by hand first: docs/schema.md, "Migrations").

-- Session settings: outside a transaction they last as long as the migrator's connection.
SET lock_timeout = '5s';
SET statement_timeout = '2h';

-- squawk assumes every script runs in a transaction (.squawk.toml); this one does not (its name says so).
-- squawk-ignore ban-concurrent-index-creation-in-transaction
CREATE INDEX CONCURRENTLY IF NOT EXISTS webhook_deliveries_due_idx
    ON webhook_deliveries (project_id, webhook_id, next_attempt_at)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;

DROP INDEX CONCURRENTLY IF EXISTS webhook_deliveries_pending_idx;
