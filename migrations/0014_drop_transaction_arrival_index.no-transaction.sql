-- Superseded by firmware_events_project_feed_idx (0013), which also serves the project_id foreign key: one
-- index less for every report to maintain. The tx_id column stays until no instance of the previous version
-- runs (a later script drops it): during a rolling upgrade, their feed still answers, without this index.

SET lock_timeout = '5s';
SET statement_timeout = '10min';
DROP INDEX CONCURRENTLY IF EXISTS firmware_events_project_arrival_idx;
