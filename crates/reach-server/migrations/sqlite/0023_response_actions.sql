-- Response actions (isolate, release, offboard): an action's type, one
-- active action per machine and type (isolate and release count as one
-- type: a release waiting behind an isolate would race it), and the
-- device's isolation as its agent last reported it or the last isolate or
-- release that succeeded.
ALTER TABLE actions ADD COLUMN kind TEXT NOT NULL DEFAULT 'LiveResponse';
DROP INDEX actions_one_active_per_machine;
CREATE UNIQUE INDEX actions_one_active_per_machine
    ON actions (machine_id, (COALESCE(batch_id, '')), (CASE kind WHEN 'Unisolate' THEN 'Isolate' ELSE kind END))
    WHERE status IN ('Pending', 'InProgress');
ALTER TABLE machines ADD COLUMN isolated BIGINT NOT NULL DEFAULT 0;
-- When the machine was offboarded (it is then revoked too): its agent is
-- answered 410 and deletes its credential.
ALTER TABLE machines ADD COLUMN offboarded_us BIGINT;
