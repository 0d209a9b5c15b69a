-- Validates migration 0029's CHECK on the audit entries written before it: a scan under SHARE UPDATE EXCLUSIVE,
-- which lets writes go on.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '30min';

ALTER TABLE audit_log VALIDATE CONSTRAINT audit_log_target_kind_known;
