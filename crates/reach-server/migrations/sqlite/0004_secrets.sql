-- Server-wide secrets (token signing key, download-link key), shared by
-- every node that uses this database, so that what one node issues every
-- node accepts. Hex-encoded random bytes.
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_us INTEGER NOT NULL
);
