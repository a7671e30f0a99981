-- The audit trail: append-only, each entry chained to the one before it by
-- hash (see src/audit.rs for what is hashed). `seq` is assigned by the
-- writer as the previous entry's + 1, in the transaction that appends.
CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    time_us     BIGINT NOT NULL,
    tenant_id   TEXT NOT NULL,        -- '' when no tenant is known (a refused token)
    actor_type  TEXT NOT NULL,        -- app, user, machine, operator, link, anonymous, system
    actor_id    TEXT NOT NULL,
    actor_name  TEXT NOT NULL,
    source_ip   TEXT,
    operation   TEXT NOT NULL,
    machine_id  TEXT,
    target      TEXT,
    outcome     TEXT NOT NULL,        -- Succeeded, Failed, Denied
    http_status BIGINT,
    details     TEXT NOT NULL,        -- a JSON object
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_by_tenant ON audit_log (tenant_id, seq);
CREATE INDEX audit_by_time ON audit_log (time_us);
