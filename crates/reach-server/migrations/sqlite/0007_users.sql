-- People who sign in to the web console. Names are unique across the
-- server, compared without case; tokens issued to them carry their roles
-- as delegated scopes (`scp`) and their name as the requestor.
CREATE TABLE users (
    name          TEXT NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    password_hash TEXT NOT NULL,           -- argon2 PHC string
    roles         TEXT NOT NULL,           -- JSON array of role names
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_us    INTEGER NOT NULL
);
CREATE UNIQUE INDEX users_by_name ON users (lower(name));
