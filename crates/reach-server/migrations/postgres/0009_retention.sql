-- Retention: when a command's stored result was deleted (its record,
-- status, errors and collected file's hash stay), and the index the
-- retention sweep walks (actions by when they last changed).
ALTER TABLE commands ADD COLUMN result_deleted_us BIGINT;
CREATE INDEX actions_by_update ON actions (updated_us);
