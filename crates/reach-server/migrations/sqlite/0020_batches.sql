-- Fleet-wide live response (issue 18): a batch is one call's commands for
-- every machine it targeted; each machine gets an ordinary action that
-- names its batch (`actions.batch_id`), so every route that serves
-- actions serves a batch's too. Counts are never stored: they are counted
-- from the batch's actions when read, so they cannot drift.
CREATE TABLE batches (
    seq                    INTEGER PRIMARY KEY AUTOINCREMENT,
    id                     TEXT NOT NULL UNIQUE,
    tenant_id              TEXT NOT NULL REFERENCES tenants(id),
    requestor              TEXT NOT NULL,
    requestor_id           TEXT NOT NULL,
    requestor_comment      TEXT,
    -- Running, Paused or Cancelled as set; Completed is read from its
    -- actions (every one final), never stored.
    status                 TEXT NOT NULL,
    commands               TEXT NOT NULL,    -- JSON [{type, params}] as submitted
    machine_count          BIGINT NOT NULL,
    wave_size              BIGINT,           -- NULL: every machine at once
    max_failed_percent     BIGINT,
    current_wave           BIGINT NOT NULL,  -- actions of later waves wait
    paused_reason          TEXT,
    created_us             BIGINT NOT NULL,
    updated_us             BIGINT NOT NULL,
    expires_us             BIGINT NOT NULL,
    cancellation_requestor TEXT,
    cancellation_comment   TEXT,
    cancelled_us           BIGINT
);
CREATE INDEX batches_by_tenant ON batches (tenant_id, created_us DESC);
CREATE INDEX batches_by_expiry ON batches (expires_us);

ALTER TABLE actions ADD COLUMN batch_id TEXT REFERENCES batches(id);
-- The batch's wave this action belongs to (1, 2, ...); NULL outside a batch.
ALTER TABLE actions ADD COLUMN wave BIGINT;
-- Counts by status and the latest change, read from the index alone.
CREATE INDEX actions_by_batch ON actions (batch_id, status, updated_us) WHERE batch_id IS NOT NULL;
-- A batch's active actions by wave: whether its current wave is over.
CREATE INDEX actions_active_by_wave ON actions (batch_id, wave)
    WHERE status IN ('Pending', 'InProgress') AND batch_id IS NOT NULL;

-- One active action per machine outside batches (Defender's rule for
-- runliveresponse), and one per batch: a machine busy with another action
-- keeps its batch action queued behind it. Claims find a machine's active
-- actions through the leading column.
DROP INDEX actions_one_active_per_machine;
CREATE UNIQUE INDEX actions_one_active_per_machine
    ON actions (machine_id, (COALESCE(batch_id, ''))) WHERE status IN ('Pending', 'InProgress');

-- A batch's actions count against neither the tenant's running limit nor
-- the requestor's queue limit: those counts read single actions only, and
-- their indexes hold only those.
DROP INDEX actions_running_by_tenant;
CREATE INDEX actions_running_by_tenant ON actions (tenant_id)
    WHERE status = 'InProgress' AND batch_id IS NULL;
DROP INDEX actions_pending_by_requestor;
CREATE INDEX actions_pending_by_requestor ON actions (requestor_id)
    WHERE status = 'Pending' AND batch_id IS NULL;
