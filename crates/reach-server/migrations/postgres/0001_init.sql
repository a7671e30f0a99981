-- Reach schema for PostgreSQL (several nodes sharing one database). It
-- mirrors the SQLite schema, migration by migration: times are microseconds
-- since the Unix epoch (UTC), flags are 0/1, JSON is stored as text, and
-- every integer is BIGINT, so the one SQL store reads both engines alike.
-- Names compare case-insensitively through lower(), with matching indexes.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_us  BIGINT NOT NULL
);

CREATE TABLE apps (
    client_id   TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,           -- argon2 PHC string
    roles       TEXT NOT NULL,           -- JSON array of role names
    created_us  BIGINT NOT NULL
);

CREATE TABLE enrollment_tokens (
    token_hash  TEXT PRIMARY KEY,        -- hex SHA-256 of the token
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    created_us  BIGINT NOT NULL
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
    first_seen_us     BIGINT NOT NULL,
    last_seen_us      BIGINT NOT NULL,
    connected         BIGINT NOT NULL DEFAULT 0,
    revoked           BIGINT NOT NULL DEFAULT 0,
    ip_addresses      TEXT NOT NULL DEFAULT '[]'   -- JSON array of reach_proto::agent::IpAddress
);
CREATE INDEX machines_by_name ON machines (tenant_id, lower(computer_dns_name));
CREATE INDEX machines_revoked_connected ON machines (id) WHERE revoked = 1 AND connected = 1;

CREATE TABLE library_files (
    tenant_id              TEXT NOT NULL REFERENCES tenants(id),
    file_name              TEXT NOT NULL,
    sha256                 TEXT NOT NULL,
    size                   BIGINT NOT NULL,
    description            TEXT,
    has_parameters         BIGINT NOT NULL,
    parameters_description TEXT,
    created_by             TEXT NOT NULL,
    last_updated_by        TEXT,
    creation_us            BIGINT NOT NULL,
    last_updated_us        BIGINT NOT NULL
);
CREATE UNIQUE INDEX library_files_by_name ON library_files (tenant_id, lower(file_name));

CREATE TABLE actions (
    seq                     BIGINT GENERATED ALWAYS AS IDENTITY,
    id                      TEXT NOT NULL UNIQUE,
    tenant_id               TEXT NOT NULL REFERENCES tenants(id),
    machine_id              TEXT NOT NULL REFERENCES machines(id),
    computer_dns_name       TEXT NOT NULL,
    requestor               TEXT NOT NULL,
    requestor_comment       TEXT,
    status                  TEXT NOT NULL,
    created_us              BIGINT NOT NULL,
    updated_us              BIGINT NOT NULL,
    cancellation_requestor  TEXT,
    cancellation_comment    TEXT,
    cancelled_us            BIGINT,
    PRIMARY KEY (seq)
);
-- One live response action per machine at a time, enforced by the engine.
CREATE UNIQUE INDEX actions_one_active_per_machine
    ON actions (machine_id) WHERE status IN ('Pending', 'InProgress');
CREATE INDEX actions_by_tenant ON actions (tenant_id, created_us DESC);
CREATE INDEX actions_active ON actions (tenant_id, status) WHERE status IN ('Pending', 'InProgress');

CREATE TABLE commands (
    action_id      TEXT NOT NULL REFERENCES actions(id),
    idx            BIGINT NOT NULL,
    command        TEXT NOT NULL,        -- JSON {type, params} as submitted
    work           TEXT NOT NULL,        -- JSON reach_proto::agent::Work
    payload_sha256 TEXT,                 -- library file hash for PutFile/RunScript
    status         TEXT NOT NULL,
    start_us       BIGINT,
    end_us         BIGINT,
    errors         TEXT NOT NULL DEFAULT '[]',
    timeout_secs   BIGINT NOT NULL,
    result_key     TEXT,
    result_size    BIGINT,
    result_sha256  TEXT,
    file_sha256    TEXT,                 -- GetFile: hash of the file on the device
    result_chunks  BIGINT,               -- number of chunks of a chunked result (NULL: one object)
    PRIMARY KEY (action_id, idx)
);
CREATE INDEX commands_running ON commands (status) WHERE status = 'InProgress';

-- GetFile results arrive in chunks, each a gzip member stored as its own
-- object; a transfer resumes from the chunks recorded here.
CREATE TABLE result_chunks (
    action_id     TEXT NOT NULL,
    idx           BIGINT NOT NULL,
    n             BIGINT NOT NULL,
    raw_size      BIGINT NOT NULL,
    raw_sha256    TEXT NOT NULL,
    stored_size   BIGINT NOT NULL,
    stored_sha256 TEXT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 1,   -- completed uploads of this chunk
    PRIMARY KEY (action_id, idx, n),
    FOREIGN KEY (action_id, idx) REFERENCES commands (action_id, idx)
);

-- Cluster-wide secrets (token signing key, download-link key): what one
-- node issues, every node accepts. Hex-encoded random bytes.
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_us BIGINT NOT NULL
);

-- Calls per caller and API per second, for rate limits that hold across
-- every node.
CREATE TABLE rate_limit_calls (
    key    TEXT NOT NULL,      -- '{caller}/{api}'
    second BIGINT NOT NULL,    -- Unix seconds
    calls  BIGINT NOT NULL,
    PRIMARY KEY (key, second)
);
