-- The events stored so far become one partition, firmware_events_before_partitioning, holding every time before a
-- boundary (0023). ATTACH PARTITION skips its scan of the table when a validated CHECK already proves the bound:
-- added here NOT VALID (a moment's lock, no scan), validated by 0022 under a lock that lets ingest go on.
-- The boundary is the first day (UTC) of the month after next: later than any report with a sane clock that
-- arrives before 0023 has run. From this script until 0023, a report dated after it is refused by the CHECK
-- (the service answers 503, and the device retries; after 0023 such reports go to the default partition).
-- The bound depends on the day the script runs, hence the DO block; the statement it runs is the one above.

-- Fail fast instead of queueing behind (and blocking) live traffic; DbUp runs this script in one transaction.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '1min';

DO $$
BEGIN
    EXECUTE format(
        'ALTER TABLE firmware_events ADD CONSTRAINT firmware_events_before_partitioning CHECK (occurred_at < %L::timestamptz) NOT VALID',
        (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months') AT TIME ZONE 'UTC');
END
$$;
