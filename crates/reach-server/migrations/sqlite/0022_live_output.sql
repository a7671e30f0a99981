-- Live output: a running script's stdout and stderr, stored as the agent
-- sends it so that clients on any node can follow, resume and replay it.
-- Each piece gets the next number of its scope's sequence: the batch's for
-- a batch's action (so that a batch's merged stream resumes after one
-- number), the action's otherwise. Taking a number locks the scope's row
-- until commit, so numbers become visible in order: a reader that saw N
-- never later finds a smaller one.
ALTER TABLE actions ADD COLUMN output_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN output_seq BIGINT NOT NULL DEFAULT 0;

-- Per command: how much of each stream is stored (a piece is taken only
-- where the stream ends, so the stored pieces are the stream's start), the
-- number of its last piece, and whether pieces are still kept (the
-- sweeper forgets them `live_output_keep_secs` after the command ended).
ALTER TABLE commands ADD COLUMN stdout_live BIGINT NOT NULL DEFAULT 0;
ALTER TABLE commands ADD COLUMN stderr_live BIGINT NOT NULL DEFAULT 0;
ALTER TABLE commands ADD COLUMN output_last_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE commands ADD COLUMN output_kept BIGINT NOT NULL DEFAULT 0;
CREATE INDEX commands_output_kept ON commands (end_us) WHERE output_kept = 1;

CREATE TABLE output_chunks (
    action_id   TEXT NOT NULL,
    idx         BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    batch_id    TEXT,
    stream      TEXT NOT NULL,
    byte_offset BIGINT NOT NULL,
    text        TEXT NOT NULL,
    PRIMARY KEY (action_id, idx, seq)
);
CREATE INDEX output_chunks_by_batch ON output_chunks (batch_id, idx, seq) WHERE batch_id IS NOT NULL;
