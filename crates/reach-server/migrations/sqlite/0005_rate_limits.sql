-- Calls per caller and API per second, for rate limits that hold across
-- every node sharing the database. Rows older than the longest window are
-- deleted as calls come in.
CREATE TABLE rate_limit_calls (
    key    TEXT NOT NULL,      -- '{caller}/{api}'
    second INTEGER NOT NULL,   -- Unix seconds
    calls  INTEGER NOT NULL,
    PRIMARY KEY (key, second)
);
