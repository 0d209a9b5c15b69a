-- Redeliveries (issue 28): how many times an admin has asked for a delivery to be sent again. The sender signs the nth
-- redelivery as the message "{delivery id}.{n}", so a receiver that de-duplicates by webhook-id processes it instead
-- of dropping it as a repeat of an attempt it had; and an attempt in flight when the redelivery was asked for records
-- its outcome only if the count is still the one it was claimed with, so it can neither mark the redelivery delivered
-- nor push its next attempt back (WebhookSender).
-- A constant default: PostgreSQL 11 and later store it in the catalog and rewrite no row; the ACCESS EXCLUSIVE lock
-- is held for a moment, and lock_timeout bounds the wait for it behind the sender's updates.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '1min';

ALTER TABLE webhook_deliveries
    ADD COLUMN redeliveries bigint NOT NULL DEFAULT 0;
