-- GetFile results arrive in chunks, each a gzip member stored as its own
-- object; a transfer resumes from the chunks recorded here.
CREATE TABLE result_chunks (
    action_id     TEXT NOT NULL,
    idx           INTEGER NOT NULL,
    n             INTEGER NOT NULL,
    raw_size      INTEGER NOT NULL,
    raw_sha256    TEXT NOT NULL,
    stored_size   INTEGER NOT NULL,
    stored_sha256 TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 1,   -- completed uploads of this chunk
    PRIMARY KEY (action_id, idx, n),
    FOREIGN KEY (action_id, idx) REFERENCES commands (action_id, idx)
);
-- Number of chunks of a chunked result (NULL: a single object).
ALTER TABLE commands ADD COLUMN result_chunks INTEGER;
