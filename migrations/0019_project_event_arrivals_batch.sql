-- Ingest as statements that each run on one node of a distributed database. Until now one statement recorded a
-- transaction's events and everything derived from them, chaining its steps through data-modifying CTEs; Citus
-- cannot send such a statement to one node, and planned it in steps whose intermediate results went to every
-- worker, so one stopped worker failed every tenant's reports. Now the derived state is kept by statements of
-- their own, in the same transaction, which find the events it stored by their feed numbers: the numbers the
-- project's row handed out last, from batch_first to last_arrival. The row stays locked until the transaction
-- commits, so that range is the transaction's own.

-- Fail fast instead of queueing behind (and blocking) live traffic; DbUp runs this script in one transaction.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '1min';

-- NULL until a transaction of this version records: an empty range. A nullable column without a default
-- rewrites nothing.
ALTER TABLE project_event_arrivals ADD COLUMN batch_first bigint;

-- A transaction that records nothing still takes the row (its range is then empty), so 0 is a count too. The
-- new check holds for every existing row (last_arrival > 0).
ALTER TABLE project_event_arrivals DROP CONSTRAINT project_event_arrivals_last_arrival_positive;
ALTER TABLE project_event_arrivals
    ADD CONSTRAINT project_event_arrivals_last_arrival_not_negative CHECK (last_arrival >= 0) NOT VALID;
-- Validated here, in the same transaction: the table has one row per project, so the scan (under a lock that
-- blocks reads) lasts as long as reading a few thousand rows, and a separate transaction would leave the check
-- unvalidated between the two.
-- squawk-ignore constraint-missing-not-valid
ALTER TABLE project_event_arrivals VALIDATE CONSTRAINT project_event_arrivals_last_arrival_not_negative;
