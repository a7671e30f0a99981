-- Reach embedded schema (SQLite). Times are microseconds since the Unix epoch, UTC.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_us  INTEGER NOT NULL
);

CREATE TABLE apps (
    client_id   TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,           -- argon2 PHC string
    roles       TEXT NOT NULL,           -- JSON array of role names
    created_us  INTEGER NOT NULL
);

CREATE TABLE enrollment_tokens (
    token_hash  TEXT PRIMARY KEY,        -- hex SHA-256 of the token
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    created_us  INTEGER NOT NULL
);

CREATE TABLE machines (
    id                TEXT PRIMARY KEY,  -- 40 hex characters
    tenant_id         TEXT NOT NULL REFERENCES tenants(id),
    credential_hash   TEXT NOT NULL,     -- hex SHA-256 of the agent secret
    computer_dns_name TEXT NOT NULL,
    os_platform       TEXT NOT NULL,
    os_version        TEXT NOT NULL,
    os_architecture   TEXT NOT NULL,
    agent_version     TEXT NOT NULL,
    last_ip           TEXT,
    tags              TEXT NOT NULL DEFAULT '[]',
    first_seen_us     INTEGER NOT NULL,
    last_seen_us      INTEGER NOT NULL,
    connected         INTEGER NOT NULL DEFAULT 0,
    revoked           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX machines_by_name ON machines (tenant_id, computer_dns_name COLLATE NOCASE);

CREATE TABLE library_files (
    tenant_id              TEXT NOT NULL REFERENCES tenants(id),
    file_name              TEXT NOT NULL COLLATE NOCASE,
    sha256                 TEXT NOT NULL,
    size                   INTEGER NOT NULL,
    description            TEXT,
    has_parameters         INTEGER NOT NULL,
    parameters_description TEXT,
    created_by             TEXT NOT NULL,
    last_updated_by        TEXT,
    creation_us            INTEGER NOT NULL,
    last_updated_us        INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, file_name)
);

CREATE TABLE actions (
    seq                     INTEGER PRIMARY KEY AUTOINCREMENT,
    id                      TEXT NOT NULL UNIQUE,
    tenant_id               TEXT NOT NULL REFERENCES tenants(id),
    machine_id              TEXT NOT NULL REFERENCES machines(id),
    computer_dns_name       TEXT NOT NULL,
    requestor               TEXT NOT NULL,
    requestor_comment       TEXT,
    status                  TEXT NOT NULL,
    created_us              INTEGER NOT NULL,
    updated_us              INTEGER NOT NULL,
    cancellation_requestor  TEXT,
    cancellation_comment    TEXT,
    cancelled_us            INTEGER
);
-- One live response action per machine at a time, enforced by the engine.
CREATE UNIQUE INDEX actions_one_active_per_machine
    ON actions (machine_id) WHERE status IN ('Pending', 'InProgress');
CREATE INDEX actions_by_tenant ON actions (tenant_id, created_us DESC);
CREATE INDEX actions_active ON actions (status, updated_us) WHERE status IN ('Pending', 'InProgress');

CREATE TABLE commands (
    action_id      TEXT NOT NULL REFERENCES actions(id),
    idx            INTEGER NOT NULL,
    command        TEXT NOT NULL,        -- JSON {type, params} as submitted
    work           TEXT NOT NULL,        -- JSON reach_proto::agent::Work
    payload_sha256 TEXT,                 -- library file hash for PutFile/RunScript
    status         TEXT NOT NULL,
    start_us       INTEGER,
    end_us         INTEGER,
    errors         TEXT NOT NULL DEFAULT '[]',
    timeout_secs   INTEGER NOT NULL,
    result_key     TEXT,
    result_size    INTEGER,
    result_sha256  TEXT,
    file_sha256    TEXT,                 -- GetFile: hash of the file on the device
    PRIMARY KEY (action_id, idx)
);
CREATE INDEX commands_running ON commands (status) WHERE status = 'InProgress';
