-- The re-wake (every fifth sweep) looks for the oldest Pending actions: an
-- index of those alone, so that a large batch in flight is not read whole
-- each time (measured on PostgreSQL: 2 s a call with 100,000 machines in
-- one batch). The sweep's queue TTL already reads `actions_active`
-- (status, updated_us) here; PostgreSQL's migration adds an index for it.
CREATE INDEX actions_pending_by_creation ON actions (created_us) WHERE status = 'Pending';

-- Sweeper duties done once per period for the whole cluster, not by every
-- node (the re-wake): the last time a node took each one's turn.
CREATE TABLE sweeper_turns (
    job TEXT PRIMARY KEY,
    last_us BIGINT NOT NULL
);
