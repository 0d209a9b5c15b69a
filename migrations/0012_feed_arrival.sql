-- The feed's arrival order, without transaction ids. 0004 ordered the feed by the storing transaction's id and
-- served only what was older than every transaction still running on the server (pg_snapshot_xmin): one
-- tenant's long transaction held back every tenant's feed, and transaction ids mean nothing across the nodes of
-- a distributed database. Now each project numbers its own events as they are stored: the transaction that
-- stores a project's events takes the project's row here (locked until it commits) and gives them the next
-- numbers, so a project's numbers are handed out in the order its transactions commit, and an event whose
-- number a poller has passed is always already visible. Nothing outside the project waits on the row.

-- Fail fast instead of queueing behind (and blocking) live traffic; DbUp runs this script in one transaction.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';

CREATE TABLE project_event_arrivals (
    project_id bigint PRIMARY KEY REFERENCES projects (id),
    -- The last number handed out; numbers a transaction took for repeats it did not store are skipped.
    last_arrival bigint NOT NULL,
    CONSTRAINT project_event_arrivals_last_arrival_positive CHECK (last_arrival > 0)
);

-- Events stored before this script all arrived before any stored after it: 0 puts them first, in id order.
-- A constant default is stored in the catalog, so adding the column rewrites nothing.
ALTER TABLE firmware_events ADD COLUMN arrival bigint NOT NULL DEFAULT 0;
