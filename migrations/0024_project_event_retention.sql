-- A project's own retention for its events, in days: set by its admins through the API (PUT /project/retention,
-- audited), NULL for none. The service-wide FirmwareManager:Retention:MaxAgeDays still applies when shorter.
-- A nullable column without a default rewrites nothing; the CHECK on a column that is NULL everywhere has nothing
-- to scan, and projects is a table of tenants (a few rows).

-- Fail fast instead of queueing behind (and blocking) live traffic; DbUp runs this script in one transaction.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '1min';

-- Days, 1 to 36500 (the CHECK below): an integer is ample.
-- squawk-ignore prefer-bigint-over-int
ALTER TABLE projects ADD COLUMN event_max_age_days integer;
-- squawk-ignore constraint-missing-not-valid
ALTER TABLE projects ADD CONSTRAINT projects_event_max_age_days_range CHECK (event_max_age_days BETWEEN 1 AND 36500);
