-- Revocation and scoped access.
-- A token carries the token generation of its app or user when issued; a
-- rotated secret, a disabled app or user bumps it, and older tokens stop
-- working on the next call.
ALTER TABLE apps ADD COLUMN token_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE apps ADD COLUMN disabled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN token_generation BIGINT NOT NULL DEFAULT 0;
-- The device groups an app or user is limited to (a JSON array of group
-- names); empty: every machine of the tenant.
ALTER TABLE apps ADD COLUMN device_groups TEXT NOT NULL DEFAULT '[]';
ALTER TABLE users ADD COLUMN device_groups TEXT NOT NULL DEFAULT '[]';
-- A device group is the machines carrying any of its tags.
CREATE TABLE device_groups (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    tags        TEXT NOT NULL,           -- JSON array of machine tags
    created_us  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
