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

-- A piece in one round trip (SQLite runs the same steps as statements in
-- the writer's transaction). Returns the piece's number and its batch, or
-- as the number: -1 the
-- command is not running on this machine, -2 the piece does not start
-- where the stored stream ends, -3 the stream would pass `p_max` bytes. The
-- checks come before the scope's row is locked (a batch's controls lock
-- the batch before its commands, and so does this); the update after it
-- checks again, and a command that changed in between raises, so that the
-- number taken is given back with the rest.
CREATE FUNCTION reach_append_output(
    p_action_id TEXT, p_idx BIGINT, p_machine_id TEXT, p_stream TEXT,
    p_offset BIGINT, p_text TEXT, p_max BIGINT)
RETURNS TABLE (out_seq BIGINT, out_batch TEXT)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_batch TEXT;
    v_seq BIGINT;
    v_live BIGINT;
    v_len BIGINT := octet_length(p_text);
BEGIN
    SELECT batch_id INTO v_batch FROM actions
        WHERE id = p_action_id AND machine_id = p_machine_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT -1::BIGINT, NULL::TEXT;
        RETURN;
    END IF;
    SELECT CASE WHEN p_stream = 'stdout' THEN stdout_live ELSE stderr_live END INTO v_live
        FROM commands WHERE action_id = p_action_id AND idx = p_idx AND status = 'InProgress';
    IF NOT FOUND THEN
        RETURN QUERY SELECT -1::BIGINT, NULL::TEXT;
        RETURN;
    END IF;
    IF v_live <> p_offset THEN
        RETURN QUERY SELECT -2::BIGINT, NULL::TEXT;
        RETURN;
    END IF;
    IF v_live + v_len > p_max THEN
        RETURN QUERY SELECT -3::BIGINT, NULL::TEXT;
        RETURN;
    END IF;
    IF v_batch IS NULL THEN
        UPDATE actions SET output_seq = output_seq + 1 WHERE id = p_action_id
            RETURNING output_seq INTO v_seq;
    ELSE
        UPDATE batches SET output_seq = output_seq + 1 WHERE id = v_batch
            RETURNING output_seq INTO v_seq;
    END IF;
    UPDATE commands SET
        stdout_live = stdout_live + CASE WHEN p_stream = 'stdout' THEN v_len ELSE 0 END,
        stderr_live = stderr_live + CASE WHEN p_stream = 'stderr' THEN v_len ELSE 0 END,
        output_last_seq = v_seq, output_kept = 1
        WHERE action_id = p_action_id AND idx = p_idx AND status = 'InProgress'
        AND (CASE WHEN p_stream = 'stdout' THEN stdout_live ELSE stderr_live END) = p_offset;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the command changed while its output was appended';
    END IF;
    INSERT INTO output_chunks (action_id, idx, seq, batch_id, stream, byte_offset, text)
        VALUES (p_action_id, p_idx, v_seq, v_batch, p_stream, p_offset, p_text);
    RETURN QUERY SELECT v_seq, v_batch;
END;
$$;
