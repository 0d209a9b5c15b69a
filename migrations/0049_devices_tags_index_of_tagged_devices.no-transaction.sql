-- The tags' GIN index (0032) holds only the devices that have tags (issue 28). A projection step updates a row of
-- devices for every device that reported, and no such update is HOT (the time of the last report is in
-- devices_silent_after_update_idx), so every index of devices gets an entry per report: in devices_tags_idx, a device
-- without tags got an "empty array" entry, all of them under one key. No query reads those entries: every filter by
-- tag names at least one tag (`tags @> ARRAY[...]` with an empty array is never asked: the API leaves the filter out
-- instead). On a fleet without tags the old index grew by some 570 pages of such entries every quarter of a million
-- reports (its pending list, merged into it by whichever step found the list full), and a step cost 2% to 6% less
-- without them, within the benchmark's noise (docs/performance.md, "The tags' index of tagged devices only"). A
-- tagged device's reports still add its tags' entries.
-- The statements that filter by tag say `d.tags <> '{}'` beside `d.tags @> @Tags`, so the planner sees that this
-- index covers the rows they ask for (Devices/DeviceSummaries.cs, Versions/FirmwareVersions.cs; with a tag given,
-- FleetHealth/FirmwareTransitions.cs).
-- Built without blocking writes, then the old index dropped the same way (no transaction: CONCURRENTLY). Until both
-- are done, the old index serves the old statements; an instance older than this script, still running during an
-- upgrade, filters by tag without the predicate and reads the project's devices by its key instead (README,
-- "Upgrading"). IF NOT EXISTS / IF EXISTS: a script interrupted before DbUp recorded it is resumed by running it again
-- (an invalid index left by a failed build must be dropped by hand first: docs/schema.md, "Migrations").

-- Session settings: outside a transaction they last as long as the migrator's connection.
SET lock_timeout = '5s';
SET statement_timeout = '2h';

-- squawk assumes every script runs in a transaction (.squawk.toml); this one does not (its name says so).
-- squawk-ignore ban-concurrent-index-creation-in-transaction
CREATE INDEX CONCURRENTLY IF NOT EXISTS devices_tagged_idx
    ON devices USING gin (tags)
    WHERE tags <> '{}';

DROP INDEX CONCURRENTLY IF EXISTS devices_tags_idx;
