-- Transcripts that came inside the agent's Finished message (at most
-- live_response.inline_result_bytes, 64 KiB by default), kept beside their
-- command instead of as one object each: a file or S3 object per action cost
-- more than the rest of recording it. The command's result_key names them
-- "inline/{action}/{index}". Retention deletes the row with the result.
CREATE TABLE inline_results (
    action_id TEXT NOT NULL,
    idx       INTEGER NOT NULL,
    bytes     BYTEA NOT NULL,
    PRIMARY KEY (action_id, idx)
);
