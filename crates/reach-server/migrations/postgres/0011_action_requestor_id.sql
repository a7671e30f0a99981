-- Who queued an action, as a stable key (app:<client id>, user:<tenant>:<name>),
-- so that each app's queued (Pending) actions can be counted and cancelled.
-- Actions made before this migration have none and count for no one.
ALTER TABLE actions ADD COLUMN requestor_id TEXT;
CREATE INDEX actions_pending_by_requestor ON actions (requestor_id) WHERE status = 'Pending';
