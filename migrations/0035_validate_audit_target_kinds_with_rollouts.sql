-- Validates migration 0034's CHECK on the audit entries written before it, under SHARE UPDATE EXCLUSIVE (writes go on).

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '30min';

ALTER TABLE audit_log VALIDATE CONSTRAINT audit_log_target_kind_known;
