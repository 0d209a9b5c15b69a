-- Ingest as statements that each run on one node of a distributed database. One statement used to record a
-- transaction's events and everything derived from them, chaining its steps through data-modifying CTEs; Citus
-- cannot send such a statement to one node, and planned it in steps whose intermediate results went to every
-- worker, so one stopped worker failed every tenant's reports. Now the transaction first takes its project's row
-- here, making it when it is missing, and reads the last number handed out; then it stores its events with the
-- next numbers and the new last one. A project's row can therefore hold 0: made by a transaction that found nothing
-- to record. The new check holds for every existing row (last_arrival > 0).

-- Fail fast instead of queueing behind (and blocking) live traffic; DbUp runs this script in one transaction.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '1min';

ALTER TABLE project_event_arrivals DROP CONSTRAINT project_event_arrivals_last_arrival_positive;
ALTER TABLE project_event_arrivals
    ADD CONSTRAINT project_event_arrivals_last_arrival_not_negative CHECK (last_arrival >= 0) NOT VALID;
-- Validated here, in the same transaction: the table has one row per project, so the scan (under a lock that
-- blocks reads) lasts as long as reading a few thousand rows, and a separate transaction would leave the check
-- unvalidated between the two.
-- squawk-ignore constraint-missing-not-valid
ALTER TABLE project_event_arrivals VALIDATE CONSTRAINT project_event_arrivals_last_arrival_not_negative;
